-- The migration role: the least privilege the whole flow needs (dry run, promote, verify, report,
-- rollback, cleanup). See docs/security.md. Run by an administrator: a superuser, or a role that owns
-- the database and the legacy tables. `orchestrator db grant-role ROLE` runs it with every
-- placeholder bound as a quoted identifier or literal (psycopg.sql); by hand, substitute them.
-- Idempotent: run it again after changing a schema setting.
--
--   role           the migration role (grant-role creates it, LOGIN, when absent)
--   database       the database
--   legacy         the legacy schema: read only
--   live           the live schema (default: the legacy schema)
--   dry_run, dry_run_users, dry_run_legacy, meta: the dry-run, partial dry-run, legacy snapshot and
--                  metadata schemas, owned by the role

-- The database: connect only. No CREATE: the role's schemas are created here, for it.
grant connect on database {database} to {role};

-- The legacy tables: read only. REFERENCES on "User"("id") is what the live tables' foreign keys
-- need (ON DELETE CASCADE actions then run as the live tables' owner, i.e. the role).
grant usage on schema {legacy} to {role};
grant select on table {legacy}."User", {legacy}."ContextProfile", {legacy}."Profile", {legacy}."ChatMessage"
to {role};
grant references ("id") on table {legacy}."User" to {role};
grant usage on type {legacy}."RelationshipContextType" to {role};

-- The live schema: USAGE, and CREATE for the first promote to create "UserProfile" and
-- "ContextIntent" (Prisma's migration.sql). The role then owns those two tables: it writes them,
-- and rollback drops them when it undoes the promote that created them.
grant usage, create on schema {live} to {role};

-- The dry-run, partial dry-run, legacy snapshot and metadata schemas: the role's own, closed to
-- everybody else (they hold copies of personal data, spec section 9).
create schema if not exists {dry_run};
alter schema {dry_run} owner to {role};
revoke all on schema {dry_run} from public;
create schema if not exists {dry_run_users};
alter schema {dry_run_users} owner to {role};
revoke all on schema {dry_run_users} from public;
create schema if not exists {dry_run_legacy};
alter schema {dry_run_legacy} owner to {role};
revoke all on schema {dry_run_legacy} from public;
create schema if not exists {meta};
alter schema {meta} owner to {role};
revoke all on schema {meta} from public;

-- Adopting an installation that ran as another role: the role takes over what the orchestrator made
-- there before (dry-run tables and views, the audit and the rollback backups, the live tables).
do $adopt$
declare
    rel record;
begin
    for rel in
        select n.nspname, c.relname
        from pg_class as c
        inner join pg_namespace as n on c.relnamespace = n.oid
        where
            c.relkind in ('r', 'p', 'v', 'm')
            and (
                n.nspname in ({dry_run_name}, {dry_run_users_name}, {dry_run_legacy_name}, {meta_name})
                or (n.nspname = {live_name} and c.relname in ('UserProfile', 'ContextIntent'))
            )
    loop
        execute format('alter table %I.%I owner to %I', rel.nspname, rel.relname, {role_name});
    end loop;
end
$adopt$;
