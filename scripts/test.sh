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
npm run --silent test:integration
