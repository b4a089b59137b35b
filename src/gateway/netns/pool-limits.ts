/** At most this many pooled sandbox networks (all tags together) are kept ready under one state dir (pool.ts, AEGIS_NETNS_POOL). */
export const POOL_MAX_ENTRIES = 16;
