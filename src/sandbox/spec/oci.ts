/**
 * The subset of the OCI runtime configuration (config.json) AEGIS generates.
 * https://github.com/opencontainers/runtime-spec/blob/v1.0.2/config.md
 */
import type { SeccompProfile } from './seccomp.js';

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface OciIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface OciNamespace {
  type: 'pid' | 'mount' | 'ipc' | 'uts' | 'cgroup' | 'network' | 'user';
  path?: string;
}

export interface OciConfig {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; inheritable: string[]; permitted: string[]; ambient: string[] };
    rlimits: { type: string; hard: number; soft: number }[];
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: {
    uidMappings: OciIdMapping[];
    gidMappings: OciIdMapping[];
    namespaces: OciNamespace[];
    cgroupsPath?: string;
    seccomp: SeccompProfile;
    maskedPaths: string[];
    readonlyPaths: string[];
  };
  annotations: Record<string, string>;
}
