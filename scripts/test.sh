#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine (root) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run --silent lint
npm run --silent test:unit
npm run --silent test:integration
