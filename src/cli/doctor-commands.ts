/**
 * `aegis doctor [--fix] [--json]`: checks this host for what AEGIS needs (OCI runtimes, cgroup
 * controllers and the crun hybrid-mode fix, user namespaces, nft/ip, debootstrap, the default
 * image) and says what to install or fix; `--fix` applies the safe fixes, then checks again.
 *
 * Exit codes: 0 no check failed (warnings allowed); 1 at least one check failed (after --fix:
 * still failing); 3 not root, and nothing else failed (validate, policy and audit work; run, image
 * build and --fix need root); 125 a fix could not be applied (or --fix without root).
 */
import type { Command } from 'commander';
import { type CliContext, EXIT } from './context.js';

const MARK = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' } as const;
/** The host is ready for root, but this user is not root. */
export const EXIT_NOT_ROOT = 3;

export function registerDoctorCommands(program: Command, ctx: CliContext): void {
  program
    .command('doctor')
    .description('Check this host for what AEGIS needs and say what to install or fix')
    .option('--fix', 'apply the safe fixes (apt-get install, cgroup v1 mounts for crun, build the default image), then check again')
    .option('--json', 'print the checks as JSON')
    .action(async (o: { fix?: boolean; json?: boolean }) => {
      const { evaluate, planFixes, userAccess } = await import('../doctor/checks.js');
      const { probeHost } = await import('../doctor/probe.js');
      const c = ctx.config();
      const probeOptions = {
        imagesDir: c.imagesDir,
        dockerHost: c.dockerHost,
        microvm: c.microvm,
        dockerTls: c.dockerTls,
        dockerContext: c.dockerContext,
        dockerRefused: c.dockerRefused,
        dockerEngine: c.dockerEngine,
      };
      const facts = await probeHost(probeOptions);
      const access = userAccess(facts.euid);
      if (o.fix && !access.root) {
        ctx.err(`aegis doctor --fix needs root (it installs packages, mounts cgroups and builds images): run it with sudo\n`);
        ctx.exitCode = EXIT.cannotStart;
        return;
      }
      let checks = evaluate(facts);
      const applied: { fix: unknown; ok: boolean; error?: string }[] = [];
      if (o.fix) {
        const { applyFix } = await import('../doctor/fix.js');
        const { isAegisError } = await import('../errors.js');
        for (const fix of planFixes(checks)) {
          ctx.err(
            `fixing: ${fix.kind === 'apt' ? `apt-get install ${fix.packages.join(' ')}` : fix.kind === 'mount-cgroup-v1' ? `mount cgroup v1 ${fix.controllers.join(',')}` : fix.kind === 'mount-tracefs' ? 'mount tracefs' : `aegis image build ${fix.ref}`}\n`,
          );
          try {
            await applyFix(fix, {
              log: (s) => ctx.err(s),
              buildImage: async (refText) => {
                const { parseImageRef } = await import('../images/ref.js');
                const { buildImage } = await import('../images/build.js');
                const r = await buildImage(parseImageRef(refText), { imagesDir: ctx.config().imagesDir, log: (s) => ctx.err(s) });
                ctx.err(`built ${r.ref} ${r.digest} in ${r.seconds.toFixed(1)} s\n`);
              },
            });
            applied.push({ fix, ok: true });
          } catch (err) {
            if (!isAegisError(err)) throw err;
            ctx.err(`fix failed: ${err.code}: ${err.message}\n`);
            applied.push({ fix, ok: false, error: `${err.code}: ${err.message}` });
          }
        }
        if (applied.length) checks = evaluate(await probeHost(probeOptions));
      }
      const failed = checks.filter((c) => c.status === 'fail');
      const onlyNotRoot = failed.length === 1 && failed[0]!.id === 'host.root';
      if (o.json) {
        ctx.out(
          JSON.stringify(
            {
              ok: failed.length === 0,
              root: access.root,
              asThisUser: access.asThisUser,
              needRoot: access.needRoot,
              checks,
              fixes: o.fix ? applied : planFixes(checks),
            },
            null,
            2,
          ) + '\n',
        );
      } else {
        for (const c of checks) {
          ctx.out(`${MARK[c.status]}  ${c.id.padEnd(20)} ${c.summary}\n`);
          if (c.status !== 'ok' && c.advice)
            ctx.out(`      ${''.padEnd(20)} -> ${c.advice}${c.fix && !o.fix ? ' [aegis doctor --fix]' : ''}\n`);
        }
        if (onlyNotRoot)
          ctx.out(
            `host ready for root, but you are not root: ${access.asThisUser.join(', ')} work as this user; ${access.needRoot.join(', ')} need root\n`,
          );
        else ctx.out(failed.length ? `${failed.length} check(s) failed\n` : 'host ready\n');
      }
      ctx.exitCode = applied.some((a) => !a.ok) ? EXIT.cannotStart : onlyNotRoot ? EXIT_NOT_ROOT : failed.length ? EXIT.failure : EXIT.ok;
    });
}
