-- The metadata schema: dry-run records, the promote/rollback audit, rollback backups and the
-- snapshot of what we last wrote to the live tables. Run with search_path set to the metadata
-- schema; idempotent. It holds copies of personal data: no privileges for PUBLIC.

create table if not exists dry_runs (
    dry_run_id         text primary key,
    started_at         timestamptz not null default clock_timestamp(),
    finished_at        timestamptz,
    status             text not null check (status in ('started', 'built', 'failed')),
    scope              text not null default 'all',          -- 'all' or 'users'
    dbt_invocation_id  text,
    legacy_schema      text not null,
    dry_run_schema     text not null,
    models_version     text,                                  -- hash of the dbt manifest's node checksums
    dry_run_tables     jsonb,                                 -- {table: oid} of the tables promote reads
    fingerprint_before jsonb,
    fingerprint_after  jsonb,
    chat_fingerprint   jsonb,
    error_failures     integer,
    warn_failures      integer,
    message            text
);

alter table dry_runs add column if not exists dry_run_tables jsonb;  -- metadata made before it existed
-- the conflict-rate threshold the summary's check used (the dbt var max_conflict_rate)
alter table dry_runs add column if not exists max_conflict_rate numeric;

create table if not exists runs (
    run_id             text primary key,
    command            text not null check (command in ('promote', 'rollback')),
    started_at         timestamptz not null default clock_timestamp(),
    finished_at        timestamptz,
    status             text not null check (status in ('started', 'committed', 'refused', 'failed', 'died')),
    os_user            text not null,
    db_user            text not null default current_user,
    dry_run_id         text,
    dbt_invocation_id  text,
    live_schema        text not null,
    scope              text not null,                         -- 'all' or 'users'
    scope_users        integer,
    created_tables     boolean not null default false,
    gates              jsonb,
    counts             jsonb,
    message            text,
    rolled_back_by     text,                                  -- for a promote: the rollback that undid it
    undoes_run_id      text                                   -- for a rollback: the promote it undid
);
-- the conflict-rate threshold a promote's gate used
alter table runs add column if not exists max_conflict_rate numeric;
-- false for a committed promote that changed no live row: rollback skips it (NULL: recorded before this)
alter table runs add column if not exists changed boolean;

create table if not exists run_scope_users (
    run_id  text not null,
    user_id text not null,
    primary key (run_id, user_id)
);

-- what we last left in the live tables, one hash per row (drift detection); no index: it is only
-- ever read whole or by user, with hash joins
create table if not exists live_snapshot (
    table_name text not null,
    id         text not null,
    user_id    text,
    row_hash   text not null
);
alter table live_snapshot add column if not exists user_id text;
-- a partial promote reads and replaces only its users' rows; a full refresh drops it and builds it
-- again after the load (orchestrator/live.py)
create index if not exists live_snapshot_user_id on live_snapshot (user_id);

-- rollback: the live rows a promote replaced or removed (as jsonb, so that nothing here depends on
-- the live tables' types), and the ids it inserted
create table if not exists run_backups (
    run_id     text not null,
    table_name text not null,
    row_data   jsonb not null
);
create index if not exists run_backups_run_id on run_backups (run_id, table_name);

create table if not exists run_inserted_ids (
    run_id     text not null,
    table_name text not null,
    id         text not null,
    primary key (run_id, table_name, id)
);
