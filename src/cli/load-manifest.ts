/**
 * How the CLI loads a manifest: through the one manifest loader (src/loader/manifest-loader.ts),
 * which `aegis run` uses with the compiled-policy cache. `validate` and `policy show|test` load
 * without the cache: they report what the compiler says of the file now, and never write state.
 */
import { type LoadedPolicy, loadManifest } from '../loader/manifest-loader.js';

export type LoadedManifest = LoadedPolicy;

/** Throws ManifestError ('manifest.unreadable' | 'manifest.invalid') with every issue formatted. */
export function loadManifestFile(file: string): Promise<LoadedManifest> {
  return loadManifest(file);
}
