/**
 * Applies the safe fixes `aegis doctor --fix` plans (adapter): one `apt-get install` of the
 * missing Debian packages, v1 mounts of controllers crun needs off cgroup v2 in hybrid mode
 * (the HOST-NOTES hugetlb fix; lasts until reboot), tracefs at /sys/kernel/tracing for the runtime
 * monitor (until reboot), and building the default image.
 * Nothing else is changed: kernel parameters, sysctls and boot options stay manual.
 */
import { mkdirSync } from 'node:fs';
import { describeFailure, findExecutable, runCommand } from '../host/exec.js';
import { TRACEFS_MOUNT, type Fix } from './checks.js';
import { DoctorError } from './errors.js';

/** Runs one fix command (bounded: 20 min, a slow mirror), keeping the tail of its output for the error. */
async function run(argv: readonly string[], log: (s: string) => void, extraEnv?: Readonly<Record<string, string>>): Promise<void> {
  const cmd = argv[0] ?? '';
  log(`+ ${argv.join(' ')}\n`);
  const r = await runCommand([findExecutable(cmd) ?? cmd, ...argv.slice(1)], {
    timeoutMs: 20 * 60_000,
    maxOutputBytes: 4000,
    ...(extraEnv ? { extraEnv } : {}),
  }).catch((err: unknown) => {
    throw new DoctorError('doctor.fix_failed', `cannot run ${cmd}: ${(err as Error).message}`, { cause: err });
  });
  if (r.code !== 0) throw new DoctorError('doctor.fix_failed', describeFailure(argv, r));
}

/** Only names Debian could ship (policy §5.6.1); the plan comes from a fixed table anyway. */
const PKG = /^[a-z0-9][a-z0-9+.-]+$/;
const CONTROLLER = /^[a-z_]+$/;

export async function applyFix(fix: Fix, ctx: { log: (s: string) => void; buildImage: (ref: string) => Promise<void> }): Promise<void> {
  if ((process.geteuid?.() ?? 0) !== 0) throw new DoctorError('doctor.not_root', 'aegis doctor --fix must run as root');
  switch (fix.kind) {
    case 'apt': {
      const pkgs = fix.packages.filter((p) => PKG.test(p));
      const env = { DEBIAN_FRONTEND: 'noninteractive' };
      await run(['apt-get', 'update', '-qq'], ctx.log, env);
      await run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...pkgs], ctx.log, env);
      return;
    }
    case 'mount-cgroup-v1':
      for (const c of fix.controllers.filter((x) => CONTROLLER.test(x))) {
        mkdirSync(`/sys/fs/cgroup/${c}`, { recursive: true });
        await run(['mount', '-t', 'cgroup', '-o', c, 'cgroup', `/sys/fs/cgroup/${c}`], ctx.log);
      }
      return;
    case 'mount-tracefs':
      // Idempotent: planned only when tracefs is not mounted there (checks.ts).
      await run(['mount', '-t', 'tracefs', 'tracefs', TRACEFS_MOUNT], ctx.log);
      return;
    case 'build-image':
      await ctx.buildImage(fix.ref);
      return;
  }
}
