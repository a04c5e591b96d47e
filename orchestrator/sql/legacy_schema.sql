-- The legacy application's tables, exactly as MIGRATION_SPEC.md §1 gives them (Prisma's DDL).
-- Unqualified names: run it with search_path set to the schema that plays the app's schema.
CREATE TYPE "RelationshipContextType" AS ENUM
  ('romantic', 'friendship', 'professional', 'creative', 'service');

CREATE TABLE "User" (
  "id"        TEXT PRIMARY KEY,
  "email"     TEXT,
  "name"      TEXT,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE TABLE "ContextProfile" (
  "id"             TEXT PRIMARY KEY,
  "userId"         TEXT NOT NULL,
  "contextType"    "RelationshipContextType" NOT NULL,
  "tonePreference" TEXT,
  "createdAt"      TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt"      TIMESTAMP(3) NOT NULL
);

CREATE TABLE "Profile" (
  "id"               TEXT PRIMARY KEY,
  "contextProfileId" TEXT NOT NULL,
  "data"             JSONB,
  "completeness"     INTEGER NOT NULL DEFAULT 0,
  "missing"          TEXT[],
  "createdAt"        TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt"        TIMESTAMP(3) NOT NULL
);

CREATE TABLE "ChatMessage" (
  "id"               TEXT PRIMARY KEY,
  "contextProfileId" TEXT NOT NULL,
  "role"             TEXT NOT NULL,
  "content"          TEXT NOT NULL,
  "createdAt"        TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
