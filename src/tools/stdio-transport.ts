/**
 * The MCP client transport over a pair of byte streams: what the broker writes goes to the
 * server's stdin (`input`), what the server prints is handed to `receive`. Used for a local tool
 * server running in its own AEGIS sandbox (sandboxed-server.ts): the sandbox's stdin and stdout
 * are AEGIS's own pipes (src/sandbox/stdio.ts), so the transport never sees a process, only
 * streams. Framing (newline-delimited JSON-RPC) is the SDK's (ReadBuffer, serializeMessage).
 *
 * Hostile output: a line that is not a JSON-RPC message is reported (onerror) and skipped; a line
 * longer than `maxMessageBytes` ends the connection (the stream can no longer be framed): every
 * pending call gets an error, and the owner is told (`onClose`) so it stops the server.
 */
import type { Writable } from 'node:stream';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { ReadBuffer, serializeMessage } from '@modelcontextprotocol/sdk/shared/stdio.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

export interface PipeTransportOptions {
  /** The server's stdin. */
  readonly input: Writable;
  readonly maxMessageBytes: number;
  /** Called once when the transport is closed (by the client, a framing error, or `end`). */
  readonly onClose?: () => void;
}

export class PipeTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  private readonly buffer: ReadBuffer;
  private closed = false;

  constructor(private readonly o: PipeTransportOptions) {
    this.buffer = new ReadBuffer({ maxBufferSize: o.maxMessageBytes });
    o.input.on('error', (err: Error) => this.onerror?.(err));
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  /** A chunk of the server's stdout. */
  receive(chunk: Buffer): void {
    if (this.closed) return;
    try {
      this.buffer.append(chunk);
    } catch (err) {
      // One message larger than the limit: the stream can no longer be framed.
      this.onerror?.(err as Error);
      void this.close();
      return;
    }
    for (;;) {
      let msg: JSONRPCMessage | null;
      try {
        msg = this.buffer.readMessage();
      } catch (err) {
        this.onerror?.(err as Error); // a malformed line: skipped, the next one may be fine
        continue;
      }
      if (msg === null) return;
      this.onmessage?.(msg);
    }
  }

  /** The server's stdout ended (it exited): the connection is over. */
  end(): void {
    void this.close();
  }

  send(message: JSONRPCMessage): Promise<void> {
    return new Promise((resolve, reject) => {
      const input = this.o.input;
      if (this.closed || input.destroyed || input.writableEnded) return reject(new Error('the tool server is not running'));
      if (input.write(serializeMessage(message))) resolve();
      else input.once('drain', () => resolve());
    });
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.buffer.clear();
    this.o.input.end();
    this.onclose?.();
    this.o.onClose?.();
    return Promise.resolve();
  }
}
