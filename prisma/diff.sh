#!/usr/bin/env bash
# Print the SQL Prisma Migrate itself would write (Prisma 6.19.3, offline: js engine + adapter-pg).
#
#   PRISMA_DIFF_DATABASE_URL=postgresql://user:password@host:port/db prisma/diff.sh [migration|legacy]
#
#   migration  schema.before.prisma -> schema.after.prisma: the unified-profile migration
#              (orchestrator/sql/unified_profile_migration.sql must be exactly this)
#   legacy     empty -> schema.before.prisma: the legacy tables (orchestrator/sql/legacy_schema.sql)
#
# The database is only connected to (Prisma's WebAssembly schema engine needs a live adapter); a
# diff between two schema files reads and writes nothing in it. Needs `npm ci` in prisma/ first
# (.ci/install-extras does it).
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${PRISMA_DIFF_DATABASE_URL:-}" ]; then
  echo "set PRISMA_DIFF_DATABASE_URL to a postgresql:// URL of a reachable PostgreSQL server" >&2
  exit 2
fi
if [ ! -f node_modules/prisma/package.json ]; then
  echo "prisma is not installed in $(pwd)/node_modules: run \`npm ci --ignore-scripts\` there (or .ci/install-extras)" >&2
  exit 2
fi

case "${1:-migration}" in
  migration) args=(--from-schema-datamodel schema.before.prisma --to-schema-datamodel schema.after.prisma) ;;
  legacy) args=(--from-empty --to-schema-datamodel schema.before.prisma) ;;
  *)
    echo "usage: $0 [migration|legacy]" >&2
    exit 2
    ;;
esac

# client: the query compiler instead of a native query engine, which Prisma would try to download.
# No telemetry or update checks: there is no network here.
export PRISMA_CLIENT_ENGINE_TYPE=client CHECKPOINT_DISABLE=1 PRISMA_HIDE_UPDATE_MESSAGE=1
exec npx --no prisma migrate diff "${args[@]}" --script
