import type { StorageBackend } from '../storage/backend.ts';
import type { KeySlot } from './keys.ts';
import { folderOf } from './layout.ts';

/**
 * The key slots under keys/. A file there that is not one (a stray file, a damaged slot) is
 * skipped: it must not keep the repository from opening with the slots that are intact.
 */
export async function* readKeySlots(
  backend: StorageBackend,
  onWarning: (message: string) => void = () => undefined,
): AsyncGenerator<{ name: string; slot: KeySlot }> {
  for await (const object of backend.list(folderOf('key'))) {
    let slot: Partial<KeySlot> | undefined;
    try {
      slot = JSON.parse((await backend.get(object.name)).toString('utf8')) as Partial<KeySlot>;
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
    }
    if (slot?.version === 1 && typeof slot.data === 'string' && typeof slot.kdf === 'object' && slot.kdf)
      yield { name: object.name, slot: slot as KeySlot };
    else onWarning(`skipped ${object.name}: not a key slot`);
  }
}
