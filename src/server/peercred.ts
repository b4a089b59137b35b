/**
 * Who is on the other end of a unix-socket connection: the kernel's SO_PEERCRED (pid, uid, gid
 * of the process that connected, as of connect()), plus that process's supplementary groups.
 *
 * Node has no getsockopt(SO_PEERCRED). The accepted socket's file descriptor is handed as stdin
 * to a one-line Perl program (perl-base is Essential on Debian: always installed) that calls
 * getsockopt on it: the answer comes from the kernel, not from anything the client sends. It
 * runs once per connection (keep-alive connections pay it once, ~5 ms).
 *
 * LIMITATION: the supplementary groups are read from /proc/<pid>/status after the fact; if the
 * connecting process has exited and its pid was reused before that read, the groups are those
 * of another process of the same uid only (a different uid is detected and its groups ignored,
 * leaving the primary gid from SO_PEERCRED). Node's socket file descriptor is read from the
 * libuv handle (`_handle.fd`), an internal but long-stable field; without it the peer is
 * unknown and the request is refused unless it carries a key.
 */
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { findExecutable, runCommand } from '../host/exec.js';
import type { Peer } from './auth.js';

const PERL = [
  'use Socket;',
  'open(my $s, "+<&=0") or die "fd 0: $!";',
  'my $c = getsockopt($s, SOL_SOCKET, SO_PEERCRED) or die "getsockopt: $!";',
  'my ($pid, $uid, $gid) = unpack("iII", $c);',
  'print "$pid $uid $gid\\n";',
].join(' ');

const cache = new WeakMap<Socket, Promise<Peer | undefined>>();

/** The peer of a unix-socket connection, or undefined when it cannot be told (then: no local identity). */
export function peerCredentials(socket: Socket): Promise<Peer | undefined> {
  let p = cache.get(socket);
  if (p === undefined) {
    p = lookup(socket).catch(() => undefined);
    cache.set(socket, p);
  }
  return p;
}

async function lookup(socket: Socket): Promise<Peer | undefined> {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  const perl = findExecutable('perl');
  if (typeof fd !== 'number' || fd < 0 || perl === null) return undefined;
  const r = await runCommand([perl, '-e', PERL], { timeoutMs: 5000, stdinFd: fd, env: {} });
  const m = /^(\d+) (\d+) (\d+)\n$/.exec(r.stdout);
  if (r.code !== 0 || m === null) return undefined;
  const [pid, uid, gid] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const gids = new Set([gid]);
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const uids = /^Uid:\s+(\d+)/m.exec(status);
    const groups = /^Groups:\s*([\d ]*)$/m.exec(status);
    if (uids !== null && Number(uids[1]) === uid && groups !== null)
      for (const g of groups[1]!.trim().split(/\s+/)) if (g !== '') gids.add(Number(g));
  } catch {
    /* the process is gone: its primary gid only */
  }
  return { pid, uid, gids: [...gids] };
}
