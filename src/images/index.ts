/**
 * Public API of the image store, used by `aegis run` before every sandbox start.
 *
 * `resolveImage` maps a manifest's `runtime:` reference to a read-only rootfs in the host-wide,
 * content-addressed store ($AEGIS_IMAGES, default /var/lib/aegis/images; independent of
 * $AEGIS_HOME). It runs the cheap per-run checks documented in store.ts and docs/images.md.
 */
import type { ImageRef } from '../policy/types.js';
import { resolveImageChecked, resolveImageSync, type ResolvedImage, type VerifyMode } from './store.js';

export { ImageError, type ImageErrorCode } from './errors.js';
export { DEFAULT_IMAGES_DIR, type ResolvedImage, type VerifyMode } from './store.js';

/**
 * Resolves `image` (tag, or pinned `@sha256:` digest) to a verified image.
 * Throws ImageError with code image.not_found (message says to run `aegis image build <ref>`),
 * image.digest_mismatch, image.corrupt, image.insecure or image.bad_ref.
 * `verify: 'stat' | 'full'` additionally walks (and with 'full' re-hashes) the whole rootfs.
 */
export async function resolveImage(image: ImageRef, opts: { imagesDir?: string; verify?: VerifyMode } = {}): Promise<ResolvedImage> {
  if ((opts.verify ?? 'quick') === 'quick') return resolveImageSync(image, opts);
  return resolveImageChecked(image, opts);
}

export { resolveImageSync };
