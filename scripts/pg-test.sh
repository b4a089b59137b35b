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

# TLS with verification: give the cluster a certificate from a throwaway test CA (once), so the
# tests can connect with sslmode=verify-full against that CA.
TLS_DIR=/var/lib/postgresql/aegis-test-tls
if [[ ! -s "$TLS_DIR/server.crt" ]] && command -v openssl >/dev/null; then
  log "creating a test CA and server certificate in $TLS_DIR"
  mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=aegis test CA" \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TLS_DIR/san.ext"
  openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" -CAcreateserial \
    -days 3650 -extfile "$TLS_DIR/san.ext" -out "$TLS_DIR/server.crt" 2>/dev/null
  chown -R postgres:postgres "$TLS_DIR"
  chmod 600 "$TLS_DIR/server.key" "$TLS_DIR/ca.key"
  chmod 644 "$TLS_DIR/ca.crt"
fi
if [[ -s "$TLS_DIR/server.crt" ]]; then
  CUR=$(su postgres -c "psql -p $PORT -Atqc 'show ssl_cert_file'")
  if [[ "$CUR" != "$TLS_DIR/server.crt" ]] || [[ $(su postgres -c "psql -p $PORT -Atqc 'show ssl'") != on ]]; then
    log "enabling TLS on cluster $VER/main"
    psql_admin "-c \"alter system set ssl_cert_file = '$TLS_DIR/server.crt'\""
    psql_admin "-c \"alter system set ssl_key_file = '$TLS_DIR/server.key'\""
    psql_admin "-c \"alter system set ssl = on\""
    psql_admin "-c 'select pg_reload_conf()'"
    sleep 0.5
  fi
fi
if [[ $(su postgres -c "psql -p $PORT -Atqc 'show ssl'" 2>/dev/null) == on && -r "$TLS_DIR/ca.crt" ]]; then
  echo "export AEGIS_TEST_PG_TLS_URL='postgres://$ROLE:$PASS@localhost:$PORT/$DB?sslmode=verify-full'"
  echo "export AEGIS_TEST_PG_CA='$TLS_DIR/ca.crt'"
else
  log "server does not offer TLS: TLS test URL not provided"
fi
