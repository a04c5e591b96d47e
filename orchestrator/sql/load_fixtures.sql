-- Copies the raw fixture seeds (every column text; a cell starting with 'b64:' is base64 of the
-- real value, for what a CSV cell cannot carry: JSON null, whitespace) into the §1 legacy tables.
-- Run with search_path set to the fixtures schema, after legacy_schema.sql. {seeds} is the schema
-- the raw seeds were loaded into (an identifier, bound by the caller); pg_temp.fixture_decode is
-- created by the caller for this session only.
INSERT INTO "User" ("id", "email", "name", "createdAt", "updatedAt")
SELECT pg_temp.fixture_decode(id), pg_temp.fixture_decode(email), pg_temp.fixture_decode(name),
       pg_temp.fixture_decode(created_at)::timestamp(3), pg_temp.fixture_decode(updated_at)::timestamp(3)
FROM {seeds}.fixture_users;

INSERT INTO "ContextProfile" ("id", "userId", "contextType", "tonePreference", "createdAt", "updatedAt")
SELECT pg_temp.fixture_decode(id), pg_temp.fixture_decode(user_id), pg_temp.fixture_decode(context_type)::"RelationshipContextType",
       pg_temp.fixture_decode(tone_preference), pg_temp.fixture_decode(created_at)::timestamp(3), pg_temp.fixture_decode(updated_at)::timestamp(3)
FROM {seeds}.fixture_context_profiles;

INSERT INTO "Profile" ("id", "contextProfileId", "data", "completeness", "missing", "createdAt", "updatedAt")
SELECT pg_temp.fixture_decode(id), pg_temp.fixture_decode(context_profile_id), pg_temp.fixture_decode(data)::jsonb,
       coalesce(pg_temp.fixture_decode(completeness)::integer, 0), pg_temp.fixture_decode(missing)::text[],
       pg_temp.fixture_decode(created_at)::timestamp(3), pg_temp.fixture_decode(updated_at)::timestamp(3)
FROM {seeds}.fixture_profiles;

INSERT INTO "ChatMessage" ("id", "contextProfileId", "role", "content", "createdAt")
SELECT pg_temp.fixture_decode(id), pg_temp.fixture_decode(context_profile_id), pg_temp.fixture_decode(role), pg_temp.fixture_decode(content),
       pg_temp.fixture_decode(created_at)::timestamp(3)
FROM {seeds}.fixture_chat_messages;
