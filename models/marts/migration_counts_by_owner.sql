-- One row per owner of the dry run's rows: every figure of the verification but the chat messages'
-- (migration_chat_message_counts), counted for that owner alone. An owner is a user id (a legacy
-- "User", or the dangling "userId" of orphan context profiles: user_id) or an orphan legacy Profile,
-- which belongs to no user (user_id NULL, legacy_profile_id). migration_counts sums the rows.
--
-- Why per owner: a sync round or catch-up rebuilds a few owners, and puts their rows in place of the
-- old ones in every table with a user_id (orchestrator/dry_run.py, splice), this one too; the summary
-- then sums these narrow rows instead of counting every model of the dry run again. Every figure is a
-- sum over owners: a row of each model belongs to exactly one owner.
-- Unlogged, like the intermediate tables: derived, rebuilt by every dry run, and no WAL for the change
-- stream to decode after a round's splice. A crash empties it: a catch-up then refuses (dry_run.py).
{{ config(unlogged=true) }}

with users as (
    select * from {{ ref('stg_legacy__users') }}
),

context_profiles as (
    select * from {{ ref('stg_legacy__context_profiles') }}
),

-- per legacy profile: orphan status, blob type, keys in the blob and keys classified
legacy_profile_keys as (
    select * from {{ ref('int_legacy_profile_key_counts') }}
),

intents_expected as (
    select * from {{ ref('int_context_intents') }}
),

profiles as (
    select * from {{ ref('profile') }}
),

context_intents as (
    select * from {{ ref('context_intent') }}
),

conflicts as (
    select * from {{ ref('migration_conflicts') }}
),

unmapped as (
    select * from {{ ref('migration_unmapped_fields') }}
),

decisions as (
    select * from {{ ref('migration_decisions') }}
),

-- each relation's rows as (owner, the figures it gives: macros/owner_figures.sql; any other is 0). A row
-- of an orphan Profile (user_id NULL) belongs to that Profile
contributions as (
    select
        user_id,
        null::text as legacy_profile_id,
        {{ owner_figures(users='1') }}
    from users
    union all
    select
        user_id,
        null::text as legacy_profile_id,
        {{ owner_figures(
            profiles='1',
            profile_completeness_out_of_range='(completeness not between 0 and 100)::int',
        ) }}
    from profiles
    union all
    select
        user_id,
        null::text as legacy_profile_id,
        {{ owner_figures(
            context_intents='1',
            intent_completeness_out_of_range='(completeness not between 0 and 100)::int',
        ) }}
    from context_intents
    union all
    select
        user_id,
        null::text as legacy_profile_id,
        {{ owner_figures(intent_pairs='1') }}
    from intents_expected
    union all
    select
        user_id,
        null::text as legacy_profile_id,
        {{ owner_figures(context_profiles='1') }}
    from context_profiles
    union all
    select
        user_id,
        case when user_id is null then legacy_profile_id end as legacy_profile_id,
        {{ owner_figures(
            legacy_profiles='legacy_profile_rows',
            legacy_profiles_migrated='case when orphan_reason is null then legacy_profile_rows else 0 end',
            legacy_profiles_of_orphan_context_profiles=
                "case when orphan_reason = 'orphan_context_profile' then legacy_profile_rows else 0 end",
            orphan_legacy_profiles="case when orphan_reason = 'orphan_profile' then legacy_profile_rows else 0 end",
            object_blobs="case when data_type = 'object' then legacy_profile_rows else 0 end",
            null_blobs="case when data_type in ('sql_null', 'null') then legacy_profile_rows else 0 end",
            non_object_blobs=
                "case when data_type in ('array', 'string', 'number', 'boolean') then legacy_profile_rows else 0 end",
            keys_seen='keys_seen',
            keys_mapped='keys_mapped',
        ) }}
    from legacy_profile_keys
    union all
    select
        user_id,
        case when user_id is null then legacy_profile_id end as legacy_profile_id,
        {{ owner_figures(keys_unmapped='(key is not null)::int', non_object_blob_rows='(key is null)::int') }}
    from unmapped
    union all
    select
        user_id,
        null::text as legacy_profile_id,
        {{ owner_figures(conflicts='1', conflicts_decided="(decided_by = 'reviewer')::int") }}
    from conflicts
    union all
    select
        user_id,
        null::text as legacy_profile_id,
        {{ owner_figures(decisions_stale="(status = 'stale')::int") }}
    from decisions
),

per_owner as (
    select
        user_id,
        legacy_profile_id,
        {%- for figure in owner_figure_names() %}
            sum({{ figure }})::bigint as {{ figure }},
        {%- endfor %}
        -- profile has a unique index on user_id, and a user id is one "User": 0 or 1 each
        least(sum(users), sum(profiles))::bigint as profile_users,
        case when sum(users) > 0 then sum(context_profiles) else 0 end::bigint as context_profiles_migrated,
        case when sum(users) > 0 then 0 else sum(context_profiles) end::bigint as orphan_context_profiles,
        (sum(conflicts) > 0)::int as users_with_conflicts
    from contributions
    group by user_id, legacy_profile_id
)

select * from per_owner
