/**
 * A Server-Sent Events parser (the WHATWG "event stream" format): `event:` and `data:` fields,
 * `:` comments, events ended by a blank line, LF, CRLF or CR line ends, several `data:` lines
 * joined by LF. The stream's bytes are the server's; a line longer than `maxLine` ends it.
 */

export interface SseMessage {
  /** `message` when the event had no `event:` field. */
  readonly event: string;
  readonly data: string;
  readonly id?: string;
}

export async function* parseSse(
  chunks: AsyncIterable<Buffer | string> | Iterable<Buffer | string>,
  maxLine = 8 * 1024 * 1024,
): AsyncGenerator<SseMessage> {
  const decoder = new TextDecoder('utf-8');
  let buf = '';
  let event = '';
  let data: string[] = [];
  let id: string | undefined;
  let sawCr = false;
  const line = (l: string): SseMessage | undefined => {
    if (l === '') {
      const msg =
        data.length > 0
          ? { event: event === '' ? 'message' : event, data: data.join('\n'), ...(id !== undefined ? { id } : {}) }
          : undefined;
      event = '';
      data = [];
      return msg;
    }
    if (l.startsWith(':')) return undefined;
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) id = value;
    return undefined;
  };
  for await (const chunk of chunks) {
    buf += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c === 10 && sawCr) {
        // The LF of a CRLF: the line already ended at the CR.
        sawCr = false;
        start = i + 1;
        continue;
      }
      sawCr = c === 13;
      if (c === 10 || c === 13) {
        const msg = line(buf.slice(start, i));
        start = i + 1;
        if (msg !== undefined) yield msg;
      }
    }
    buf = buf.slice(start);
    if (buf.length > maxLine) throw new Error(`an event stream line is longer than ${maxLine} characters`);
  }
}
