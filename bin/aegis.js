#!/usr/bin/env node
// Thin launcher: the CLI is bundled from src/cli/main.ts into dist/bundle/ by `npm run build` (scripts/bundle.ts).
import { main } from '../dist/bundle/aegis.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`aegis: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 125;
  },
);
