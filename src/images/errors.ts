/**
 * Errors of the image store. Codes are API (tests and callers branch on them, never on text).
 */
import { AegisError } from '../errors.js';

export type ImageErrorCode =
  /** No image under that tag or digest in the store. */
  | 'image.not_found'
  /** The image's stored file manifest no longer hashes to its digest, or files differ from it. */
  | 'image.digest_mismatch'
  /** Store metadata (tag index, image record, file manifest) is unreadable or malformed. */
  | 'image.corrupt'
  /** A file or folder of the store cannot be read by this user (checking an image reads every file: run as root). */
  | 'image.unreadable'
  /** Store directories are not owned by the store owner or are writable by others. */
  | 'image.insecure'
  /** A reference (name:tag[@sha256:...]) does not parse. */
  | 'image.bad_ref'
  /** Hostile or unsupported archive content: traversal, absolute path, escaping link. */
  | 'image.unsafe_entry'
  /** An OCI layout / docker-save archive is malformed or a blob does not match its digest. */
  | 'image.bad_archive'
  /** An import exceeds its size or entry-count limit (decompression bombs). */
  | 'image.too_large'
  /** A format or feature AEGIS does not support (zstd layers, foreign architecture, ...). */
  | 'image.unsupported'
  /** `aegis image build` failed (debootstrap, apt-get, missing tool). */
  | 'image.build_failed'
  /** An image build spec (image.yaml, --apt, --pip) is malformed or asks for something refused. */
  | 'image.spec_invalid'
  /** An SBOM or advisory input (dpkg status, dist-info, lockfile, OSV file) cannot be used. */
  | 'image.advisory_invalid'
  /** No build recipe for that reference. */
  | 'image.unknown_recipe'
  /** Another process holds the store lock for too long. */
  | 'image.locked'
  /** Removing an image that a tag still points to (without --force). */
  | 'image.in_use'
  /** An image signing or verification key is missing, unreadable, readable by others, or not Ed25519. */
  | 'image.key_invalid'
  /** The host requires signed images and this one has no signature by a trusted key. */
  | 'image.signature_missing'
  /** A signature by a trusted key does not verify, or signs another image. */
  | 'image.signature_invalid'
  /** A registry cannot be reached (connection, TLS verification, timeout). */
  | 'image.registry_unreachable'
  /** A registry refused the credentials, or asks for some and none are configured. */
  | 'image.registry_auth'
  /** A registry answered something AEGIS cannot use (an error status, a malformed manifest, a wrong digest). */
  | 'image.registry_error';

export class ImageError extends AegisError<ImageErrorCode> {}
