/** The secrets area: the encrypted store, its pure rules, and what `aegis run` asks of it. */
export * from './core.js';
export { SecretsError, type SecretsErrorCode } from './errors.js';
export { SecretStore, type SecretListing, type WriteResult } from './store.js';
export {
  checkBody,
  hostBound,
  injectRequest,
  placeholdersIn,
  type CredentialReason,
  type InjectableSecret,
  type Injection,
  type SecretUse,
} from './inject.js';
export {
  prepareRunSecrets,
  revealRunSecrets,
  secretBindEvents,
  secretValidity,
  secretDeniedEvent,
  withPlaceholders,
  type PlaceholderBinding,
  type PrepareRunSecretsOptions,
  type RunSecrets,
} from './run.js';
