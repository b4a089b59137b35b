/**
 * THE role matrix: which roles may use which route. The router authorizes every request with
 * this table and nothing else, and the integration test walks every route x every role from it
 * (allowed, or 403). `public` routes need no key (health, readiness, the OpenAPI document).
 *
 * admin: keys, secrets, everything. deployer: agents. operator: executions and their outputs, pools.
 * auditor: the audit log only. (Issue 11, "Authentication and least privilege".)
 */
import type { Role } from './store/types.js';

export type RouteId =
  | 'health'
  | 'ready'
  | 'metrics'
  | 'openapi'
  | 'keys.create'
  | 'keys.list'
  | 'keys.revoke'
  | 'secrets.set'
  | 'secrets.list'
  | 'secrets.rotate'
  | 'secrets.delete'
  | 'agents.deploy'
  | 'agents.list'
  | 'agents.get'
  | 'agents.delete'
  | 'agents.pool'
  | 'executions.create'
  | 'executions.list'
  | 'executions.get'
  | 'executions.cancel'
  | 'executions.stream'
  | 'executions.outputs'
  | 'audit.events'
  | 'audit.checkpoint'
  | 'audit.inclusion'
  | 'audit.consistency';

const A: Role = 'admin';
const D: Role = 'deployer';
const O: Role = 'operator';
const U: Role = 'auditor';

export const ROLE_MATRIX: Readonly<Record<RouteId, 'public' | readonly Role[]>> = {
  health: 'public',
  ready: 'public',
  openapi: 'public',
  metrics: [A, O, U],
  'keys.create': [A],
  'keys.list': [A],
  'keys.revoke': [A],
  'secrets.set': [A],
  'secrets.list': [A],
  'secrets.rotate': [A],
  'secrets.delete': [A],
  'agents.deploy': [A, D],
  'agents.list': [A, D, O],
  'agents.get': [A, D, O],
  'agents.delete': [A, D],
  'agents.pool': [A, O],
  'executions.create': [A, O],
  'executions.list': [A, O],
  'executions.get': [A, O],
  'executions.cancel': [A, O],
  'executions.stream': [A, O],
  'executions.outputs': [A, O],
  'audit.events': [A, U],
  'audit.checkpoint': [A, U],
  'audit.inclusion': [A, U],
  'audit.consistency': [A, U],
};

/** Whether a principal holding `roles` may use `route` (deny unless the table says so). */
export function allowed(route: RouteId, roles: readonly Role[]): boolean {
  const r = ROLE_MATRIX[route];
  return r === 'public' || roles.some((x) => r.includes(x));
}
