// The control channel of a process run inside a namespace (the test API
// server, a bench worker): one JSON command a line on its stdin.

/**
 * The JSON objects of `stream`, one a non-blank line, in order; the next line
 * is read only once the caller has handled the one before. A line that is not
 * JSON throws.
 */
// deno-lint-ignore no-explicit-any
export async function* jsonCommands(stream: ReadableStream<Uint8Array>): AsyncGenerator<any> {
  let buffer = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (!line) continue;
      yield JSON.parse(line);
    }
  }
}
