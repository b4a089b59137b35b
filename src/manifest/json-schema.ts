/**
 * The published JSON Schema of agent.yaml (schema/agent.schema.json), generated from the zod
 * schema so that the two never disagree. It describes the input shape (strings with units, as
 * written); the checks a JSON Schema cannot express (units, public suffixes, reserved paths)
 * are made by `aegis validate`.
 */
import * as z from 'zod';
import { manifestSchema } from './schema.js';

export const SCHEMA_ID = 'urn:aegis:schema:agent:1.0';

export function manifestJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(manifestSchema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Record<
    string,
    unknown
  >;
  return { ...schema, $id: SCHEMA_ID, title: 'AEGIS agent manifest (agent.yaml) v1' };
}

/** The exact text of schema/agent.schema.json. */
export function manifestJsonSchemaText(): string {
  return JSON.stringify(manifestJsonSchema(), null, 2) + '\n';
}
