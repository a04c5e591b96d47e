// Prisma 6.19.3 config for computing Prisma Migrate's own DDL offline (see docs/prisma.md).
//
// Prisma 7 and Prisma 6's default "classic" engine download native engine binaries at run time;
// the js engine runs Prisma's WebAssembly schema engine through a driver adapter instead, so
// `prisma migrate diff` works with no network. A diff between two schema files changes nothing in
// the database (it runs one read-only query), but the js engine still needs a reachable PostgreSQL
// to open the adapter: give it one in PRISMA_DIFF_DATABASE_URL (e.g. the test server). Run with
// PRISMA_CLIENT_ENGINE_TYPE=client in the environment, or Prisma tries to download a query engine
// (diff.sh sets it).
import { PrismaPg } from "@prisma/adapter-pg";
import { defineConfig } from "prisma/config";

const connectionString = process.env.PRISMA_DIFF_DATABASE_URL;

export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  schema: "schema.after.prisma",
  async adapter() {
    if (!connectionString) {
      throw new Error(
        "PRISMA_DIFF_DATABASE_URL is not set: give it a postgresql:// URL of a reachable server " +
          "(migrate diff only connects, it changes nothing)",
      );
    }
    // allowExitOnIdle: else node waits out pg's 10 s idle timeout after printing the SQL.
    return new PrismaPg({ connectionString, allowExitOnIdle: true });
  },
});
