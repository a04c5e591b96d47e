-- One row: every figure of the verification counted once, over the whole dry run (all users, every
-- batch). migration_summary unpivots it into one row per figure or check.
-- The CTEs read twice are not materialized: each reader scans the table itself (in parallel),
-- instead of a copy of it that may spill to disk.
with users as not materialized (
    select * from {{ ref('stg_legacy__users') }}
),

context_profiles as (
    select * from {{ ref('stg_legacy__context_profiles') }}
),

chat_messages as (
    select * from {{ ref('stg_legacy__chat_messages') }}
),

-- per legacy profile: orphan status, blob type, keys in the blob and keys classified (one narrow row
-- each, instead of the blobs and the classified keys)
legacy_profile_keys as (
    select * from {{ ref('int_legacy_profile_key_counts') }}
),

intents_expected as (
    select * from {{ ref('int_context_intents') }}
),

profiles as not materialized (
    select * from {{ ref('profile') }}
),

context_intents as not materialized (
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

-- read twice: not materialized, so both readers run in parallel (a CTE scan is parallel-restricted)
context_profile_status as not materialized (
    select
        context_profiles.context_profile_id,
        context_profiles.user_id,
        context_profiles.context_type,
        users.user_id is not null as is_migrated
    from context_profiles
    left join users
        on context_profiles.user_id = users.user_id
),

-- the intent each context profile's (user, context type) maps to, if any: at most one, since
-- context_intent has a unique index on (user_id, context_type)
context_profile_intents as (
    select
        context_profile_status.context_profile_id,
        context_profile_status.is_migrated,
        context_intents.id is not null as has_intent
    from context_profile_status
    left join context_intents
        on
            context_profile_status.is_migrated
            and context_profile_status.user_id = context_intents.user_id
            and context_profile_status.context_type = context_intents.context_type
),

-- one scan per relation, every figure of it counted with a filter; sums are 0, not NULL, when
-- nothing matches (legacy_profile_rows is 0 for a classified key's profile missing from
-- int_legacy_profiles_ordered)
legacy_profile_counts as (
    select
        coalesce(sum(legacy_profile_rows), 0) as legacy_profiles,
        coalesce(sum(legacy_profile_rows) filter (where orphan_reason is null), 0) as legacy_profiles_migrated,
        coalesce(sum(legacy_profile_rows) filter (where orphan_reason = 'orphan_context_profile'), 0)
            as legacy_profiles_of_orphan_context_profiles,
        coalesce(sum(legacy_profile_rows) filter (where orphan_reason = 'orphan_profile'), 0) as orphan_legacy_profiles,
        coalesce(sum(legacy_profile_rows) filter (where data_type = 'object'), 0) as object_blobs,
        coalesce(sum(legacy_profile_rows) filter (where data_type in ('sql_null', 'null')), 0) as null_blobs,
        coalesce(sum(legacy_profile_rows) filter (where data_type in ('array', 'string', 'number', 'boolean')), 0)
            as non_object_blobs,
        coalesce(sum(keys_seen), 0) as keys_seen,
        coalesce(sum(keys_mapped), 0) as keys_mapped
    from legacy_profile_keys
),

unmapped_counts as (
    select
        count(*) filter (where key is not null) as keys_unmapped,
        count(*) filter (where key is null) as non_object_blob_rows
    from unmapped
),

conflict_counts as (
    select
        count(*) as conflicts,
        count(distinct user_id) as users_with_conflicts,
        count(*) filter (where decided_by = 'reviewer') as conflicts_decided
    from conflicts
),

decision_counts as (
    select count(*) filter (where status = 'stale') as decisions_stale
    from decisions
),

-- profile has a unique index on user_id: a user matches at most one profile
user_counts as (
    select
        count(*) as users,
        count(profiles.user_id) as users_with_a_profile
    from users
    left join profiles
        on users.user_id = profiles.user_id
),

profile_counts as (
    select
        count(*) as profiles,
        count(*) filter (where completeness not between 0 and 100) as completeness_out_of_range
    from profiles
),

intent_counts as (
    select
        count(*) as context_intents,
        count(*) filter (where completeness not between 0 and 100) as completeness_out_of_range
    from context_intents
),

context_profile_counts as (
    select
        count(*) as context_profiles,
        count(*) filter (where is_migrated) as context_profiles_migrated,
        count(*) filter (where not is_migrated) as orphan_context_profiles
    from context_profile_status
),

-- one parallel hash join of the chat messages with their context profile's status
message_counts as (
    select
        count(*) as chat_messages,
        count(*) filter (where links.is_migrated) as chat_messages_of_migrated_context_profiles,
        count(*) filter (where links.is_migrated and links.has_intent) as chat_messages_mapped_to_one_intent,
        count(*) filter (where not links.is_migrated) as chat_messages_of_orphan_context_profiles,
        count(*) filter (where links.context_profile_id is null) as chat_messages_without_context_profile
    from chat_messages
    left join context_profile_intents as links
        on chat_messages.context_profile_id = links.context_profile_id
),

-- each side is one aggregate row: the cross joins make exactly one row
counts as (
    select
        user_counts.users,
        user_counts.users_with_a_profile as profile_users,
        profile_counts.profiles,
        context_profile_counts.context_profiles,
        context_profile_counts.context_profiles_migrated,
        context_profile_counts.orphan_context_profiles,
        intent_counts.context_intents,
        legacy_profile_counts.legacy_profiles,
        legacy_profile_counts.legacy_profiles_migrated,
        legacy_profile_counts.legacy_profiles_of_orphan_context_profiles,
        legacy_profile_counts.orphan_legacy_profiles,
        legacy_profile_counts.object_blobs,
        legacy_profile_counts.null_blobs,
        legacy_profile_counts.non_object_blobs,
        legacy_profile_counts.keys_seen,
        legacy_profile_counts.keys_mapped,
        unmapped_counts.keys_unmapped,
        unmapped_counts.non_object_blob_rows,
        conflict_counts.conflicts,
        conflict_counts.users_with_conflicts,
        conflict_counts.conflicts_decided,
        decision_counts.decisions_stale,
        message_counts.chat_messages,
        message_counts.chat_messages_of_migrated_context_profiles,
        message_counts.chat_messages_mapped_to_one_intent,
        message_counts.chat_messages_of_orphan_context_profiles,
        message_counts.chat_messages_without_context_profile,
        (select count(*) from intents_expected) as intent_pairs,
        profile_counts.completeness_out_of_range + intent_counts.completeness_out_of_range
            as completeness_out_of_range
    from user_counts
    cross join profile_counts
    cross join intent_counts
    cross join context_profile_counts
    cross join legacy_profile_counts
    cross join unmapped_counts
    cross join conflict_counts
    cross join decision_counts
    cross join message_counts
)

select * from counts
