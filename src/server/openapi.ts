/**
 * The OpenAPI 3.1 document, generated from the route table and its zod schemas (zod 4's
 * z.toJSONSchema, JSON Schema 2020-12, which OpenAPI 3.1 uses as is).
 */
import { z } from 'zod';
import { ROLE_MATRIX } from './roles.js';
import { ROUTES, type ResponseKind } from './routes.js';
import { ErrorBody } from './schemas.js';

type Json = Record<string, unknown>;

function schemaOf(t: z.ZodType, io: 'input' | 'output'): Json {
  const s = z.toJSONSchema(t, { io, target: 'draft-2020-12', unrepresentable: 'any' }) as Json;
  delete s['$schema'];
  return s;
}

function content(kind: ResponseKind): Json {
  if ('media' in kind)
    return {
      description: kind.description,
      content: { [kind.media]: { schema: kind.media === 'application/json' ? { type: 'object' } : { type: 'string' } } },
    };
  return { description: 'OK', content: { 'application/json': { schema: schemaOf(kind, 'output') } } };
}

const ERRORS: Record<string, string> = {
  '400': 'invalid request (invalid_request, manifest_invalid, archive_invalid)',
  '401': 'no key, or a bad, expired or revoked key (unauthorized)',
  '403': 'the role may not use this route (forbidden)',
  '404': 'unknown id or route (not_found)',
  '409': 'invalid state transition (conflict)',
  '413': 'body too large (payload_too_large)',
  '415': 'a content type the route does not take (unsupported_media_type)',
  '429': 'too many authentication failures from this source (throttled)',
  '500': 'internal error',
  '503': 'not ready, or the audit log cannot be read (unavailable)',
};

/** Builds the document (deterministic: same routes, same document). */
export function openApiDocument(version: string): Json {
  const paths: Record<string, Record<string, Json>> = {};
  for (const r of ROUTES) {
    const parameters: Json[] = [];
    for (const [where, obj] of [
      ['path', r.params],
      ['query', r.query],
    ] as const) {
      if (obj === undefined) continue;
      const js = schemaOf(obj, 'input') as { properties?: Record<string, Json>; required?: string[] };
      for (const [name, schema] of Object.entries(js.properties ?? {}))
        parameters.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema });
    }
    const roles = ROLE_MATRIX[r.id];
    const op: Json = {
      operationId: r.id,
      summary: r.summary,
      'x-aegis-roles': roles,
      ...(roles === 'public' ? { security: [] } : {}),
      ...(parameters.length > 0 ? { parameters } : {}),
      responses: {
        ...Object.fromEntries(Object.entries(r.responses).map(([code, kind]) => [code, content(kind)])),
        ...Object.fromEntries(
          Object.entries(ERRORS).map(([code, description]) => [
            code,
            { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
          ]),
        ),
      },
    };
    if (r.body === 'multipart') {
      op['requestBody'] = {
        required: true,
        content: {
          'multipart/form-data': {
            schema: {
              type: 'object',
              required: ['manifest', 'code'],
              properties: {
                manifest: { type: 'string', description: 'the agent.yaml text' },
                code: { type: 'string', contentMediaType: 'application/gzip', description: 'a .tar.gz of the code folder' },
              },
            },
          },
        },
      };
    } else if (r.body !== undefined) {
      op['requestBody'] = { required: true, content: { 'application/json': { schema: schemaOf(r.body, 'input') } } };
    }
    (paths[r.path] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'AEGIS orchestrator API', version },
    servers: [{ url: '/' }],
    components: {
      schemas: { Error: schemaOf(ErrorBody, 'output') },
      securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'ak_<id>.<secret>' } },
    },
    security: [{ apiKey: [] }],
    paths,
  };
}
