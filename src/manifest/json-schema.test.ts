import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT } from '../test-support/repo.js';
import { manifestJsonSchema, manifestJsonSchemaText } from './json-schema.js';

describe('schema/agent.schema.json', () => {
  it('is up to date with the zod schema (run `npm run schema` after changing it)', () => {
    assert.equal(readFileSync(join(REPO_ROOT, 'schema', 'agent.schema.json'), 'utf8'), manifestJsonSchemaText());
  });
  it('is strict and documents the fields', () => {
    const s = manifestJsonSchema() as {
      additionalProperties: boolean;
      required: string[];
      properties: Record<string, { description?: string; additionalProperties?: boolean }>;
    };
    assert.equal(s.additionalProperties, false);
    assert.deepEqual([...s.required].sort(), ['agent', 'version']);
    assert.equal(s.properties.agent?.additionalProperties, false);
    assert.ok(s.properties.permissions?.description);
  });
});
