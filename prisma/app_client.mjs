// The application, as far as the live tables go: its own Prisma Client (generated from
// schema.after.prisma by generate.sh) reading and writing "UserProfile" and "ContextIntent" through
// the pg driver adapter, as during the cutover (docs/cutover.md, docs/prisma.md).
//
//   APP_DATABASE_URL=postgresql://user:password@host:port/db APP_DATABASE_SCHEMA=<live schema> \
//     node prisma/app_client.mjs read
//   ... node prisma/app_client.mjs write <userId> <location>
//
// read: every User with its profile and context intents, as JSON (one array, users by id), exactly
//   as Prisma returns them (DateTime as ISO-8601 UTC, Json as parsed values).
// write: sets that user's Profile.location through Prisma (which moves its @updatedAt too) and
//   prints the updated profile as JSON.
//
// APP_DATABASE_SCHEMA (default public) goes to the adapter: PrismaPg ignores `?schema=` in the URL.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { PrismaPg } from "@prisma/adapter-pg";

const require = createRequire(import.meta.url);
const GENERATED = new URL("./generated/index.js", import.meta.url);

function usage(message) {
  console.error(`${message}\nusage: node app_client.mjs read | write <userId> <location>`);
  process.exit(2);
}

const [command, ...args] = process.argv.slice(2);
if (!(command === "read" && args.length === 0) && !(command === "write" && args.length === 2)) {
  usage(`unexpected arguments: ${JSON.stringify(process.argv.slice(2))}`);
}
const connectionString = process.env.APP_DATABASE_URL;
if (!connectionString) {
  usage("set APP_DATABASE_URL to a postgresql:// URL of the database holding the live tables");
}
if (!existsSync(GENERATED)) {
  console.error("the Prisma Client is not generated: run prisma/generate.sh (or .ci/install-extras)");
  process.exit(2);
}
const { PrismaClient } = require(fileURLToPath(GENERATED));

const schema = process.env.APP_DATABASE_SCHEMA || "public";
// allowExitOnIdle: else node waits out pg's idle timeout after the work is done.
const adapter = new PrismaPg({ connectionString, allowExitOnIdle: true }, { schema });
// errorFormat minimal: no code frame (the bundled runtime's minified source) in error messages.
const prisma = new PrismaClient({ adapter, errorFormat: "minimal" });

async function main() {
  if (command === "read") {
    return prisma.user.findMany({ include: { profile: true, contextIntents: true }, orderBy: { id: "asc" } });
  }
  const [userId, location] = args;
  return prisma.profile.update({ where: { userId }, data: { location } });
}

try {
  console.log(JSON.stringify(await main()));
} catch (error) {
  const code = error?.code ? `${error.code}: ` : ""; // Prisma's error code, e.g. P2021 (no such table)
  console.error(code + (error instanceof Error ? error.message.trim() : String(error)));
  process.exitCode = 1;
} finally {
  await prisma.$disconnect();
}
