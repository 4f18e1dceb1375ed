#!/bin/sh
# compose's Postgres, on its first start (an empty data volume): userdest's own role. It owns the
# userdest database and its schema, so migrations and maintenance (partitions) work, but it is no
# superuser: a leaked DATABASE_URL cannot read the server's files, run programs (COPY ... PROGRAM)
# or change other roles. The password comes from the environment (psql's \getenv), never from a
# command line. For a volume made before this script existed, run it once by hand:
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-userdest-role.sh
set -eu
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname userdest <<'SQL'
\getenv password USERDEST_DB_PASSWORD
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'userdest') AS missing \gset
\if :missing
  CREATE ROLE userdest LOGIN PASSWORD :'password';
\else
  ALTER ROLE userdest LOGIN PASSWORD :'password';
\endif
ALTER DATABASE userdest OWNER TO userdest;
ALTER SCHEMA public OWNER TO userdest;
-- Tables made before (a volume older than this script) move to the role too.
SELECT format('ALTER TABLE %s OWNER TO userdest', c.oid::regclass)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') \gexec
SQL
# The `ha` profile's standby copies and follows this server as the superuser (a replication
# connection, which "host all all all" does not cover), with its password.
grep -q '^host replication all all scram-sha-256' "$PGDATA/pg_hba.conf" \
  || echo 'host replication all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
