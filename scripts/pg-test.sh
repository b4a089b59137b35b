#!/usr/bin/env bash
# Provides a local PostgreSQL server for the audit store's conformance tests (Debian 12, root).
# Idempotent: installs the Debian `postgresql` package if missing, creates and starts a cluster,
# creates the role and database, and prints on stdout the variables the tests read:
#   eval "$(bash scripts/pg-test.sh)"   # sets AEGIS_TEST_PG_URL (and AEGIS_TEST_PG_TLS_URL)
# Diagnostics go to stderr; stdout carries only the export lines.
set -euo pipefail
log() { printf '[pg-test] %s\n' "$*" >&2; }

DB=aegis_test
ROLE=aegis_test
PASS=aegis_test_pw   # test-only credentials for a server that listens on localhost only

if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing Debian postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql ssl-cert >&2
fi

VER=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VER main"; then
  log "creating cluster $VER/main"
  pg_createcluster "$VER" main >&2
fi
PORT=$(pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $3}')
if ! pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $4}' | grep -q online; then
  log "starting cluster $VER/main on port $PORT"
  pg_ctlcluster "$VER" main start >&2
fi
for _ in $(seq 1 50); do
  su postgres -c "psql -p $PORT -Atqc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.2
done

psql_admin() { su postgres -c "psql -p $PORT -v ON_ERROR_STOP=1 -Atq $*" >&2; }
if ! su postgres -c "psql -p $PORT -Atqc \"select 1 from pg_roles where rolname='$ROLE'\"" | grep -q 1; then
  log "creating role $ROLE"
  psql_admin "-c \"create role $ROLE login password '$PASS'\""
fi
if ! su postgres -c "psql -p $PORT -Atqc \"select 1 from pg_database where datname='$DB'\"" | grep -q 1; then
  log "creating database $DB"
  psql_admin "-c \"create database $DB owner $ROLE\""
fi

echo "export AEGIS_TEST_PG_URL='postgres://$ROLE:$PASS@127.0.0.1:$PORT/$DB'"

# TLS with verification, when the server offers it with a certificate we can name a CA for
# (Debian's default cluster uses the ssl-cert "snakeoil" certificate, self-signed for the host name).
SSL=$(su postgres -c "psql -p $PORT -Atqc 'show ssl'" 2>/dev/null || echo off)
CERT=$(su postgres -c "psql -p $PORT -Atqc 'show ssl_cert_file'" 2>/dev/null || true)
if [[ "$SSL" == on && -r "$CERT" ]]; then
  CN=$(openssl x509 -in "$CERT" -noout -subject -nameopt multiline 2>/dev/null | awk -F' = ' '/commonName/ {print $2}')
  if [[ -n "$CN" ]] && getent hosts "$CN" >/dev/null; then
    echo "export AEGIS_TEST_PG_TLS_URL='postgres://$ROLE:$PASS@$CN:$PORT/$DB?sslmode=verify-full'"
    echo "export AEGIS_TEST_PG_CA='$CERT'"
  else
    log "server certificate CN '$CN' does not resolve: TLS test URL not provided"
  fi
else
  log "server does not offer TLS: TLS test URL not provided"
fi
