/** Errors of `aegis doctor`. Codes are API. */
import { AegisError } from '../errors.js';

export type DoctorErrorCode =
  /** `--fix` needs root (apt-get, mount, image build). */
  | 'doctor.not_root'
  /** A fix command failed; the message has its output. */
  | 'doctor.fix_failed';

export class DoctorError extends AegisError<DoctorErrorCode> {}
