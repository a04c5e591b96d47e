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
-- a dry-run state is a full dry run (scope 'all'), or one caught up from the state before it for the
-- owners changed since (scope 'catch-up': promote --catch-up, sync): its parent, and the full dry run a
-- reviewer read that it descends from (its root; a full dry run is its own root)
alter table dry_runs add column if not exists parent_dry_run_id text;
alter table dry_runs add column if not exists root_dry_run_id text;
-- the hash batches of users its per-user models were built in (orchestrator dry-run --batches)
alter table dry_runs add column if not exists batches integer;
-- a full dry run: the users its summary counts (what a catch-up's audit says the reviewer read)
alter table dry_runs add column if not exists users bigint;
-- a catch-up state: the owners it rebuilt (a promote --catch-up's audit names every owner rebuilt since the
-- reviewed dry run, across refused or killed attempts)
create table if not exists dry_run_rebuilt_owners (
    dry_run_id text not null,
    owner_kind text not null,
    owner_id   text not null,
    primary key (dry_run_id, owner_kind, owner_id)
);

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
-- promote --catch-up and sync: users of the reviewed dry run, and owners rebuilt since the review
alter table runs add column if not exists reviewed_users integer;
alter table runs add column if not exists rebuilt_users integer;
-- the users a promote or sync round left out: deleted from "User" after the snapshot its rows were built
-- from (their live rows went by the cascade; the next round rebuilds them from what is left)
alter table runs add column if not exists left_out_users text[];
-- a catch-up or sync round: users held back (a stale reviewer decision: their live rows stay as they were,
-- the next round tries again) and users handed over (the application wrote their live rows: not written)
alter table runs add column if not exists held_back_users text[];
alter table runs add column if not exists handed_over_users text[];
alter table runs drop constraint if exists runs_command_check;
alter table runs add constraint runs_command_check check (command in ('promote', 'rollback', 'sync'));

-- the owners a catch-up or sync round rebuilt from the legacy data changed since (user ids, orphan
-- Profile ids)
create table if not exists run_rebuilt_owners (
    run_id     text not null,
    owner_kind text not null,
    owner_id   text not null,
    primary key (run_id, owner_kind, owner_id)
);

-- Cutover (spec §10): users whose live rows the application wrote since our last write, handed over to it
-- by a sync round: not rebuilt or listed again unless their legacy rows change again
create table if not exists handed_over_users (
    user_id        text not null,
    run_id         text not null,
    handed_over_at timestamptz not null default clock_timestamp(),
    differing_rows integer not null,                          -- their live rows that differed from ours
    primary key (user_id, run_id)
);

-- `sync --end`: the cutover of the live tables' promote is over (the application owns them); later rounds
-- refuse until a new dry run is promoted
create table if not exists cutover_ends (
    ended_at   timestamptz not null default clock_timestamp(),
    os_user    text not null,
    run_id     text not null                                  -- the promote or round the live tables came from
);

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

-- What a reference point read of the legacy tables, per owner (orchestrator/changes.py, spec §10): a
-- user id or an orphan Profile id, and a digest of its rows' ids and versions. dry_run_reads: what the
-- latest dry-run state read (a dry run, then each catch-up); live_reads: what the live tables reflect
-- (each promote and sync round). The owners whose digest differs now are the ones changed since.
create table if not exists dry_run_reads (
    owner_kind text not null check (owner_kind in ('user', 'profile')),
    owner_id   text not null,
    digest     numeric not null,
    primary key (owner_kind, owner_id)
);
create table if not exists live_reads (
    owner_kind text not null check (owner_kind in ('user', 'profile')),
    owner_id   text not null,
    digest     numeric not null,
    primary key (owner_kind, owner_id)
);
-- The users whose digests differ between live_reads and dry_run_reads (a round's users the live tables do
-- not reflect yet: held back, left out, handed over), kept by difference by every write to either
-- (orchestrator/changes.py), so that a round finds them without comparing a million digests.
-- reads_lag_known holds its one row while reads_lag is exact; a write of every owner empties both, and
-- the next round counts them again.
create table if not exists reads_lag (
    owner_id text primary key
);
create table if not exists reads_lag_known (
    known boolean primary key default true check (known)
);
-- rollback: the live reads a promote or sync round replaced (digest NULL: the owner had none)
create table if not exists run_read_backups (
    run_id     text not null,
    owner_kind text not null,
    owner_id   text not null,
    digest     numeric,
    primary key (run_id, owner_kind, owner_id)
);

-- The reviewers' decisions (spec §11): which of a conflict's values is migrated. One per conflict,
-- named as migration_conflicts names it (context_type NULL for a shared field, object sub-keys as
-- `field.subKey`); `value` is the conflict's own JSON for the chosen value. Business data: the models
-- read it as the dbt source review.conflict_decisions (models/staging/review), so every rebuild applies
-- it; `orchestrator decisions import | clear` write it (orchestrator/decision_store.py).
create table if not exists conflict_decisions (
    user_id      text not null,
    context_type text,
    field        text not null,
    value        jsonb not null,
    reviewer     text not null,                               -- decisions import --by (default: the OS user)
    decided_at   timestamptz not null default clock_timestamp(),
    note         text,
    file_sha256  text not null                                -- the imported file's
);
create unique index if not exists conflict_decisions_key
on conflict_decisions (user_id, coalesce(context_type, ''), field);
-- the change stream (orchestrator/stream.py) reads whose decision a delete removed: the whole old row
alter table conflict_decisions replica identity full;

-- the change stream (orchestrator/stream.py): the replication slot that follows the legacy tables, and the
-- position of the stream the dry-run state's copy of the legacy rows is at (at most one row)
create table if not exists change_stream (
    slot_name  text primary key,
    position   pg_lsn not null,
    updated_at timestamptz not null default clock_timestamp()
);
-- the owners whose rows the stream changed in the copy and the dry-run state has not rebuilt yet (a run
-- killed between the two): every later run rebuilds them, until one records them
create table if not exists stream_owners (
    owner_kind text not null,
    owner_id   text not null,
    primary key (owner_kind, owner_id)
);

-- every import and clear of decisions: who, when, which file, how many
create table if not exists decision_events (
    event_id    text primary key,
    action      text not null check (action in ('import', 'clear')),
    actor       text not null,
    db_user     text not null default current_user,
    at          timestamptz not null default clock_timestamp(),
    file_name   text,
    file_sha256 text,
    decisions   integer not null,                             -- decisions imported, or removed
    scope_users text[]                                         -- clear --user: whose; NULL: everybody's
);
