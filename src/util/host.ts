import os from 'node:os';

export function currentUsername(): string {
  try {
    return os.userInfo().username;
  } catch {
    // No passwd entry for this uid (common in containers).
    return String(process.getuid?.() ?? '');
  }
}
