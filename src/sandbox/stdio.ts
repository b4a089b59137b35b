/**
 * The sandbox's stdin, stdout and stderr: AEGIS owns them and copies the data.
 *
 * ARCHITECTURE NOTE (issue 8): the runtime never gets a descriptor of the operator's. OCI
 * runtimes take over the stdio they are given: crun chowns it to the sandbox's host uid
 * (101000) and runsc to 65534, after which the agent can fchmod it (setuid bit on a host file),
 * ftruncate a log it was only allowed to append to, or reopen an input file for writing through
 * /proc/self/fd; a host `/dev/null` or the operator's terminal would be chowned the same way.
 * So the runtime is spawned with three anonymous socket pairs that AEGIS created (Node's
 * 'pipe'), and AEGIS copies between them and the operator's descriptors:
 * - stdin: the operator's data is pumped into the sandbox with backpressure and EOF is passed
 *   on; 'ignore' gives an empty stream (EOF at once), never the host's /dev/null.
 * - stdout/stderr: written to the operator's fd with `write(2)` (so O_APPEND and the shared file
 *   offset of a `>` redirection are honoured), one chunk at a time: the sandbox's stream is
 *   paused while a write is pending, so a slow reader slows the agent down instead of filling
 *   AEGIS's memory. The run ends only after everything the agent wrote has been delivered.
 *   EPIPE (the operator's reader went away) stops the copy quietly and closes the sandbox's
 *   end, so the agent sees EPIPE too, as in a shell pipeline.
 * Chowning or chmod-ing a socket pair only changes that anonymous socket: nothing on the host.
 *
 * LIMITATION: the agent's fds 0-2 are sockets, not the operator's terminal: `isatty()` is false
 * (there is no `--tty` yet), and reopening `/dev/stdout` or `/proc/self/fd/1` fails with ENXIO
 * on crun and gVisor (runc interposes pipes of its own); write to the fd instead.
 */
import { write } from 'node:fs';
import type { Readable, Writable } from 'node:stream';

/** Where a chunk of the sandbox's output goes; `done` is called once it is written (or failed). */
type Sink = (chunk: Buffer, done: (err: NodeJS.ErrnoException | null) => void) => void;

export interface OutputPump {
  /** Resolves when the source ended (or was destroyed) and every chunk was handed to the sink. */
  readonly done: Promise<void>;
  /** The first error of the destination (then the rest is discarded); null if none. */
  error(): NodeJS.ErrnoException | null;
  /**
   * Called when every process that could write to the source is gone: if the source still has
   * not ended after `idleMs` without data (and no write pending), it is closed.
   */
  settle(idleMs: number): void;
}

/** Copies `src` into `sink` one chunk at a time (the source is paused while a chunk is pending). */
export function pump(src: Readable, sink: Sink): OutputPump {
  let failure: NodeJS.ErrnoException | null = null;
  let pending = false;
  let ended = false;
  let lastData = performance.now();
  let idle: NodeJS.Timeout | undefined;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    finish = () => {
      clearInterval(idle);
      resolve();
    };
  });
  const maybeFinish = (): void => {
    if (ended && !pending) finish();
  };
  src.on('data', (chunk: Buffer) => {
    lastData = performance.now();
    if (failure !== null) return;
    pending = true;
    src.pause();
    sink(chunk, (err) => {
      pending = false;
      // A slow destination is activity too: idle time counts from the last delivery.
      lastData = performance.now();
      if (err !== null) {
        failure = err;
        // The reader is gone: close the sandbox's end so the agent gets EPIPE, as in a pipeline.
        src.destroy();
      } else {
        src.resume();
      }
      maybeFinish();
    });
  });
  src.once('end', () => {
    ended = true;
    maybeFinish();
  });
  src.once('close', () => {
    ended = true;
    maybeFinish();
  });
  src.on('error', () => {
    ended = true;
    maybeFinish();
  });
  return {
    done,
    error: () => failure,
    settle(idleMs: number): void {
      if (ended) return;
      clearInterval(idle);
      idle = setInterval(
        () => {
          if (!pending && performance.now() - lastData >= idleMs) src.destroy();
        },
        Math.max(10, Math.floor(idleMs / 4)),
      );
    },
  };
}

/** A sink that writes to a file descriptor with write(2): regular file, pipe, tty, /dev/null. */
export function fdSink(fd: number): Sink {
  return (chunk, done) => {
    let off = 0;
    let backoff = 1;
    const step = (): void => {
      write(fd, chunk, off, chunk.length - off, null, (err, n) => {
        if (err !== null) {
          // The operator's fd may be non-blocking (shared with a process that set O_NONBLOCK).
          if (err.code === 'EAGAIN' || err.code === 'EINTR') {
            setTimeout(step, backoff);
            backoff = Math.min(backoff * 2, 50);
            return;
          }
          done(err);
          return;
        }
        backoff = 1;
        off += n;
        if (off < chunk.length) step();
        else done(null);
      });
    };
    step();
  };
}

/** A sink that hands each chunk to a callback (synchronously). */
export function callbackSink(fn: (chunk: Buffer) => void): Sink {
  return (chunk, done) => {
    fn(chunk);
    done(null);
  };
}

/** A sink that drops everything (the sandbox's 'ignore'). */
export const discardSink: Sink = (_chunk, done) => done(null);

export interface InputPump {
  /** Stops reading the source (the sandbox's stdin end is closed by the runtime's exit). */
  stop(): void;
}

/**
 * Pumps `src` (the operator's stdin, or any stream) into the sandbox's stdin with backpressure
 * and ends it at EOF; `null` ends it at once (empty input). EPIPE (the agent closed its stdin
 * or exited) is ignored.
 */
export function pumpInput(src: Readable | null, dst: Writable): InputPump {
  dst.on('error', () => undefined);
  if (src === null) {
    dst.end();
    return { stop: () => undefined };
  }
  const onError = (): void => {
    dst.end();
  };
  src.on('error', onError);
  src.pipe(dst);
  return {
    stop(): void {
      src.unpipe(dst);
      src.off('error', onError);
      src.pause();
      dst.destroy();
    },
  };
}
