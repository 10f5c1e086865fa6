import { ConfigError } from '../errors.ts';
import readline from 'node:readline';

/** Reads a line from the terminal without echoing it. */
export function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    const output = rl as unknown as { _writeToOutput: (text: string) => void };
    let asked = false;
    output._writeToOutput = (text: string) => {
      if (!asked) {
        process.stderr.write(text);
        asked = true;
      }
    };
    rl.question(question, (answer) => {
      process.stderr.write('\n');
      rl.close();
      resolve(answer);
    });
    rl.on('SIGINT', () => {
      rl.close();
      reject(new Error('interrupted'));
    });
  });
}

/** Reads a line from the terminal, echoing it (for confirmations). */
export function promptLine(question: string): Promise<string> {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    rl.question(question, (answer) => {
      rl.close();
      resolve(answer);
    });
  });
}

/** Asks for the database's name to be typed before replacing it; without a terminal there is no one to ask. */
export async function confirmByName(database: string): Promise<boolean> {
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new ConfigError(`replacing database ${database} needs confirmation, and no terminal is attached`, {
      hint: 'Pass --yes to replace it without asking.',
    });
  }
  return (
    (await promptLine(`This replaces database ${database}. Type its name to go on: `)).trim() === database
  );
}
