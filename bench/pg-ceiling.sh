#!/usr/bin/env bash
# Postgres' own ceiling for the journal's insert: pgbench, 32 clients, each transaction one row
# of journal_messages with a 100 KiB payload (sent as a bytea literal), synchronous_commit on.
#
#   bash bench/pg-ceiling.sh [postgres://postgres@127.0.0.1:5432/test] [transactions per client]
#
# Compare with `storage::bench` (the same row through the gateway's PgJournal).
set -euo pipefail
url="${1:-${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}"
per_client="${2:-125}"
pgbench="$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -n 1)"
schema="bench_ceiling_$$"
work="$(mktemp -d)"
trap 'psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null; rm -rf "$work"' EXIT
psql "$url" -qc "CREATE SCHEMA $schema" >/dev/null
psql "$url" -q >/dev/null <<SQL
SET search_path = $schema;
$(cat "$(dirname "$0")/../src/storage/postgres/migrations/0002_journal.sql")
SQL
payload="$(head -c 102400 /dev/urandom | od -An -v -tx1 | tr -d ' \n')"
cat > "$work/insert.sql" <<SQL
INSERT INTO journal_messages (message_id, session_id, recipient, kind, file_name, mimetype, size, status, created_at, updated_at, payload, crc32) VALUES ('c-' || :client_id || '-' || nextval('${schema}.journal_messages_seq_seq'), 'tienda', '51987654321', 'document', 'factura.pdf', 'application/pdf', 102400, 'queued', 0, 0, '\\x$payload'::bytea, 0);
SQL
PGOPTIONS="-c search_path=$schema -c synchronous_commit=on" "$pgbench" "$url" -n -c 32 -j 2 -t "$per_client" \
  -f "$work/insert.sql" -r 2>&1 | grep -E "tps|latency|number of transactions actually"
