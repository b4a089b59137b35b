/** Writes schema/agent.schema.json from the zod schema (`npm run schema`). */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { manifestJsonSchemaText } from '../src/manifest/json-schema.js';
import { REPO_ROOT } from '../src/test-support/repo.js';

const out = join(REPO_ROOT, 'schema', 'agent.schema.json');
writeFileSync(out, manifestJsonSchemaText());
process.stderr.write(`wrote ${out}\n`);
