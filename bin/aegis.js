#!/usr/bin/env node
// Thin launcher: the CLI is bundled from src/cli/main.ts into dist/bundle/ by `npm run build` (scripts/bundle.ts).
import { main } from '../dist/bundle/aegis.js';

// Once the command has finished (a run ended, its audit closed, its output delivered), the process
// ends: normally at once, as nothing is left to do. A connection a library keeps open past its
// close (an MCP client's HTTP stream seen here) must not keep a finished `aegis run` alive, so
// the process exits with the command's code at the latest 2 s later (the timer itself keeps
// nothing alive). Long-running commands (`aegis serve`) return only when they are done.
const finish = (code) => {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 2000).unref();
};
main(process.argv.slice(2)).then(finish, (err) => {
  process.stderr.write(`aegis: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  finish(125);
});
