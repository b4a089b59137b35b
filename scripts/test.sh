#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine (root) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run --silent lint
npm run --silent test:unit
# audit: start PostgreSQL and export AEGIS_TEST_PG_URL for the audit store conformance tests
pg_env=$(bash scripts/pg-test.sh)
eval "$pg_env"
# The runtime monitor (AEGIS_MONITOR, default auto: on where the host supports it) adds ~1.3 s of
# bpftrace start-up to every `aegis run`; the suite runs without it except where a test asks for
# it (test/integration/monitor.test.ts runs it on crun, runc, gVisor and through the CLI). The
# demo (scripts/demo.sh) runs with the default.
export AEGIS_MONITOR="${AEGIS_MONITOR:-off}"
npm run --silent test:integration
