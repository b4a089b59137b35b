/**
 * Upload errors (agent code archives and manifest text sent to the server). The codes are API:
 * the server maps them to 4xx answers and tests branch on `code`, never on the message.
 */
import { AegisError } from '../../errors.js';

export type UploadErrorCode =
  /** The compressed archive is larger than `maxArchiveBytes`. */
  | 'upload.archive_too_large'
  /** The archive does not start with the gzip magic bytes (not a `.tar.gz`). */
  | 'upload.not_gzip'
  /** The gzip stream or the tar inside it is truncated or malformed. */
  | 'upload.corrupt'
  /** The files' total uncompressed size is over `maxTotalBytes`. */
  | 'upload.content_too_large'
  /** The archive inflates more than `maxRatio` times its compressed size (a gzip or tar bomb). */
  | 'upload.ratio_exceeded'
  /** More entries than `maxEntries`. */
  | 'upload.too_many_entries'
  /** An entry's path is absolute, climbs out with `..`, is too long or too deep, has control characters, or goes through a file. */
  | 'upload.path_refused'
  /** An entry that is not a regular file or a directory (symlink, hardlink, device, fifo, unknown). */
  | 'upload.entry_refused'
  /** The same path appears twice (an entry may never overwrite another). */
  | 'upload.duplicate_entry'
  /** The destination directory already exists. */
  | 'upload.destination_exists'
  /** Writing the extracted tree failed (disk full, permissions). */
  | 'upload.io';

export class UploadError extends AegisError<UploadErrorCode> {}
