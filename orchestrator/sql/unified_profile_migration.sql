-- The unified Profile + ContextIntent live tables: Prisma Migrate's own migration, verbatim.
--
-- Everything below this header is exactly what Prisma 6.19.3 prints for
--   prisma/diff.sh migration
--   (= prisma migrate diff --from-schema-datamodel prisma/schema.before.prisma
--                          --to-schema-datamodel prisma/schema.after.prisma --script)
-- and tests/python/test_prisma_ddl.py proves it, statement by statement and in the catalog.
-- This file is the single source of the live-table DDL: `orchestrator promote` executes it as-is
-- with search_path set to the live schema (hence the unqualified names), and the application team
-- records it as an applied Prisma migration (docs/prisma.md).
--
-- Deliberate differences from Prisma's output: none. Prisma emits `CREATE SCHEMA IF NOT EXISTS
-- "public";` only when diffing from an empty schema, not for this before -> after diff; should a
-- later Prisma emit it here, it stays out of this file (promote creates no schema, and the live
-- schema need not be "public") and the test ignores it.

-- CreateTable
CREATE TABLE "UserProfile" (
    "id" TEXT NOT NULL,
    "userId" TEXT NOT NULL,
    "coreValues" JSONB NOT NULL DEFAULT '[]',
    "beliefs" JSONB NOT NULL DEFAULT '{}',
    "interactionStyle" JSONB NOT NULL DEFAULT '{}',
    "lifestyle" JSONB NOT NULL DEFAULT '{}',
    "constraints" JSONB NOT NULL DEFAULT '[]',
    "location" TEXT,
    "ageRange" TEXT,
    "name" TEXT,
    "completeness" INTEGER NOT NULL DEFAULT 0,
    "missing" TEXT[],
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "UserProfile_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ContextIntent" (
    "id" TEXT NOT NULL,
    "userId" TEXT NOT NULL,
    "contextType" "RelationshipContextType" NOT NULL,
    "relationshipTimeline" TEXT,
    "exclusivityExpectation" TEXT,
    "familyIntentions" TEXT,
    "attractionImportance" TEXT,
    "friendshipDepth" TEXT,
    "groupActivityPreference" TEXT,
    "emotionalSupportExpectation" TEXT,
    "partnershipType" TEXT,
    "commitmentHorizon" TEXT,
    "complementarySkills" JSONB,
    "equityOrRevShare" TEXT,
    "creativeType" TEXT,
    "roleNeeded" TEXT,
    "processStyle" TEXT,
    "egoBalance" TEXT,
    "compensationExpectation" TEXT,
    "serviceType" TEXT,
    "budgetRange" TEXT,
    "timelineNeeded" TEXT,
    "credentialsRequired" TEXT,
    "completeness" INTEGER NOT NULL DEFAULT 0,
    "missing" TEXT[],
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "ContextIntent_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "UserProfile_userId_key" ON "UserProfile"("userId");

-- CreateIndex
CREATE UNIQUE INDEX "ContextIntent_userId_contextType_key" ON "ContextIntent"("userId", "contextType");

-- AddForeignKey
ALTER TABLE "UserProfile" ADD CONSTRAINT "UserProfile_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ContextIntent" ADD CONSTRAINT "ContextIntent_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;

