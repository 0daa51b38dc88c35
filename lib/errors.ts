// What an error looks like to a user: one line. Parsers quote the bad input in their messages (JSON.parse
// shows the text around the fault, newlines included), so foreign messages pass through errorText.

/** The message of an error on one line: control characters are written as escapes (`\n`, `\u0000`). */
export function errorText(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/[\u0000-\u001f\u007f]/g, (c) => JSON.stringify(c).slice(1, -1));
}
