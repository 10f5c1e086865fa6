/**
 * Text read from a repository (a planted file's name, a field of a JSON file), made safe to print
 * in a message: control and format characters (terminal escapes, bidirectional overrides) are
 * shown as \u escapes, and the text is cut to `max` characters.
 */
export function printable(text: string, max = 200): string {
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  return cut.replace(
    /[\p{Cc}\p{Cf}\u2028\u2029]/gu,
    (character) => `\\u${character.codePointAt(0)!.toString(16).padStart(4, '0')}`,
  );
}
