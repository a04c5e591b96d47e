#!/usr/bin/env bash
# Generate the application's Prisma Client from schema.after.prisma into prisma/generated/
# (git-ignored), offline: Prisma 6.19.3's prisma-client-js with the driver adapter, whose query
# engine is the WebAssembly query compiler (query_compiler_bg.wasm) shipped in the npm package.
#
#   prisma/generate.sh          (.ci/install-extras runs it; so does tests/python/test_prisma_client.py)
#
# Needs `npm ci --ignore-scripts` in prisma/ first. Connects to no database.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -f node_modules/prisma/package.json ] || [ ! -f node_modules/@prisma/client/package.json ]; then
  echo "prisma or @prisma/client is not installed in $(pwd)/node_modules: run \`npm ci --ignore-scripts\` there (or .ci/install-extras)" >&2
  exit 2
fi

# client: the query compiler instead of a native query engine, which Prisma would try to download.
# The schema's datasource url must resolve, or the CLI cannot read the generator's configuration and
# falls back to downloading the native engine as well; generate never connects, so any URL will do.
export PRISMA_CLIENT_ENGINE_TYPE=client CHECKPOINT_DISABLE=1 PRISMA_HIDE_UPDATE_MESSAGE=1
export PRISMA_DIFF_DATABASE_URL="${PRISMA_DIFF_DATABASE_URL:-postgresql://generate-connects-to-nothing@localhost/none}"
exec npx --no prisma generate --config prisma.config.ts
