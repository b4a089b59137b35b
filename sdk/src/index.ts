/** @aegis/sdk: a typed client for the AEGIS server API (`aegis serve`). */
export { Aegis, Agent, Execution, type AegisOptions, type DeployOptions, type StreamOptions, type WaitOptions } from './client.js';
export { AegisApiError, AegisClientError, type ApiErrorCode, type ClientErrorCode } from './errors.js';
export { packCodeDir, unpackOutputs, type PackOptions, type UnpackResult } from './tar.js';
export { parseSse, type SseMessage } from './sse.js';
export * from './types.js';
