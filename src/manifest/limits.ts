/** Manifest limits, in a module of their own so that loaders can use them without the parser. */

/** Manifests larger than this are refused before parsing (by the parser and every loader). */
export const MAX_MANIFEST_BYTES = 64 * 1024;
