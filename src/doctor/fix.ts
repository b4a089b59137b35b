/**
 * Applies the safe fixes `aegis doctor --fix` plans (adapter): one `apt-get install` of the
 * missing Debian packages, v1 mounts of controllers crun needs off cgroup v2 in hybrid mode
 * (the HOST-NOTES hugetlb fix; lasts until reboot), and building the default image.
 * Nothing else is changed: kernel parameters, sysctls and boot options stay manual.
 */
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import type { Fix } from './checks.js';
import { DoctorError } from './errors.js';

function run(argv: readonly string[], log: (s: string) => void, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv as [string, ...string[]];
    log(`+ ${argv.join(' ')}\n`);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let tail = '';
    const keep = (b: Buffer) => {
      tail = (tail + b.toString('utf8')).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (err) => reject(new DoctorError('doctor.fix_failed', `cannot run ${cmd}: ${err.message}`, { cause: err })));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new DoctorError('doctor.fix_failed', `${argv.join(' ')} exited ${code}:\n${tail}`))));
  });
}

/** Only names Debian could ship (policy §5.6.1); the plan comes from a fixed table anyway. */
const PKG = /^[a-z0-9][a-z0-9+.-]+$/;
const CONTROLLER = /^[a-z_]+$/;

export async function applyFix(fix: Fix, ctx: { log: (s: string) => void; buildImage: (ref: string) => Promise<void> }): Promise<void> {
  if ((process.geteuid?.() ?? 0) !== 0) throw new DoctorError('doctor.not_root', 'aegis doctor --fix must run as root');
  switch (fix.kind) {
    case 'apt': {
      const pkgs = fix.packages.filter((p) => PKG.test(p));
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
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
    case 'build-image':
      await ctx.buildImage(fix.ref);
      return;
  }
}
