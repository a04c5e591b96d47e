-- One row per figure or check of the verification (spec §7; ORIGINAL_PLAN.md's verification list).
-- `expected` and `passed` are NULL for informational figures. `check_kind` decides how a check
-- passes: `equal` (value = expected) or `at_most` (value <= expected).
{% set max_conflict_rate = var('max_conflict_rate', 0.05) %}
with users as (
    select * from {{ ref('stg_legacy__users') }}
),

context_profiles as (
    select * from {{ ref('stg_legacy__context_profiles') }}
),

chat_messages as (
    select * from {{ ref('stg_legacy__chat_messages') }}
),

legacy_profiles as (
    select * from {{ ref('int_legacy_profiles_ordered') }}
),

profile_keys as (
    select * from {{ ref('int_profile_keys_classified') }}
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

context_profile_status as (
    select
        context_profiles.context_profile_id,
        context_profiles.user_id,
        context_profiles.context_type,
        users.user_id is not null as is_migrated
    from context_profiles
    left join users
        on context_profiles.user_id = users.user_id
),

-- every chat message of a migrated context profile, with the intents its (user, context type) maps to
message_links as (
    select
        chat_messages.chat_message_id,
        context_profile_status.is_migrated,
        context_profile_status.context_profile_id is not null as has_context_profile,
        count(context_intents.id) as intent_matches
    from chat_messages
    left join context_profile_status
        on chat_messages.context_profile_id = context_profile_status.context_profile_id
    left join context_intents
        on
            context_profile_status.is_migrated
            and context_profile_status.user_id = context_intents.user_id
            and context_profile_status.context_type = context_intents.context_type
    group by chat_messages.chat_message_id, context_profile_status.is_migrated, has_context_profile
),

counts as (
    select
        (select count(*) from users) as users,
        (select count(*) from profiles) as profiles,
        (select count(distinct user_id) from profiles) as profile_users,
        (select count(*) from context_profiles) as context_profiles,
        (
            select count(*) from context_profile_status
            where is_migrated
        ) as context_profiles_migrated,
        (
            select count(*) from context_profile_status
            where not is_migrated
        ) as orphan_context_profiles,
        (select count(*) from intents_expected) as intent_pairs,
        (select count(*) from context_intents) as context_intents,
        (select count(*) from legacy_profiles) as legacy_profiles,
        (
            select count(*) from legacy_profiles
            where orphan_reason is null
        ) as legacy_profiles_migrated,
        (
            select count(*) from legacy_profiles
            where orphan_reason = 'orphan_context_profile'
        ) as legacy_profiles_of_orphan_context_profiles,
        (
            select count(*) from legacy_profiles
            where orphan_reason = 'orphan_profile'
        ) as orphan_legacy_profiles,
        (
            select count(*) from legacy_profiles
            where data_type = 'object'
        ) as object_blobs,
        (
            select count(*) from legacy_profiles
            where data_type in ('sql_null', 'null')
        ) as null_blobs,
        (
            select count(*) from legacy_profiles
            where data_type in ('array', 'string', 'number', 'boolean')
        ) as non_object_blobs,
        (select count(*) from profile_keys) as keys_seen,
        (
            select count(*) from profile_keys
            where is_mapped
        ) as keys_mapped,
        (
            select count(*) from unmapped
            where key is not null
        ) as keys_unmapped,
        (
            select count(*) from unmapped
            where key is null
        ) as non_object_blob_rows,
        (select count(*) from conflicts) as conflicts,
        (select count(distinct user_id) from conflicts) as users_with_conflicts,
        (
            select count(*) from profiles
            where completeness not between 0 and 100
        ) + (
            select count(*) from context_intents
            where completeness not between 0 and 100
        ) as completeness_out_of_range,
        (select count(*) from chat_messages) as chat_messages,
        (
            select count(*) from message_links
            where is_migrated
        ) as chat_messages_of_migrated_context_profiles,
        (
            select count(*) from message_links
            where is_migrated and intent_matches = 1
        ) as chat_messages_mapped_to_one_intent,
        (
            select count(*) from message_links
            where not is_migrated
        ) as chat_messages_of_orphan_context_profiles,
        (
            select count(*) from message_links
            where not has_context_profile
        ) as chat_messages_without_context_profile
),

metrics (metric, value, expected, check_kind) as (
    select
        'users',
        users,
        null::numeric,
        null
    from counts
    union all
    select
        'profiles',
        profiles,
        users,
        'equal'
    from counts
    union all
    select
        'users_with_one_profile',
        profile_users,
        users,
        'equal'
    from counts
    union all
    select
        'context_profiles',
        context_profiles,
        null,
        null
    from counts
    union all
    select
        'context_profiles_migrated',
        context_profiles_migrated,
        null,
        null
    from counts
    union all
    select
        'orphan_context_profiles',
        orphan_context_profiles,
        null,
        null
    from counts
    union all
    select
        'context_intents',
        context_intents,
        intent_pairs,
        'equal'
    from counts
    union all
    select
        'duplicate_context_profiles',
        context_profiles_migrated - intent_pairs,
        null,
        null
    from counts
    union all
    select
        'legacy_profiles',
        legacy_profiles,
        null,
        null
    from counts
    union all
    select
        'legacy_profiles_migrated',
        legacy_profiles_migrated,
        null,
        null
    from counts
    union all
    select
        'legacy_profiles_of_orphan_context_profiles',
        legacy_profiles_of_orphan_context_profiles,
        null,
        null
    from counts
    union all
    select
        'orphan_legacy_profiles',
        orphan_legacy_profiles,
        null,
        null
    from counts
    union all
    select
        'object_blobs',
        object_blobs,
        null,
        null
    from counts
    union all
    select
        'null_blobs',
        null_blobs,
        null,
        null
    from counts
    union all
    select
        'non_object_blobs',
        non_object_blob_rows,
        non_object_blobs,
        'equal'
    from counts
    union all
    select
        'keys_seen',
        keys_seen,
        null,
        null
    from counts
    union all
    select
        'keys_mapped',
        keys_mapped,
        null,
        null
    from counts
    union all
    select
        'keys_unmapped',
        keys_unmapped,
        null,
        null
    from counts
    union all
    select
        'keys_accounted',
        keys_mapped + keys_unmapped,
        keys_seen,
        'equal'
    from counts
    union all
    select
        'conflicts',
        conflicts,
        null,
        null
    from counts
    union all
    select
        'users_with_conflicts',
        users_with_conflicts,
        null,
        null
    from counts
    union all
    select
        'conflict_rate',
        case when users = 0 then 0 else users_with_conflicts::numeric / users end,
        {{ max_conflict_rate }},
        'at_most'
    from counts
    union all
    select
        'completeness_out_of_range',
        completeness_out_of_range,
        0,
        'equal'
    from counts
    union all
    select
        'chat_messages',
        chat_messages,
        null,
        null
    from counts
    union all
    select
        'chat_messages_mapped_to_one_intent',
        chat_messages_mapped_to_one_intent,
        chat_messages_of_migrated_context_profiles,
        'equal'
    from counts
    union all
    select
        'chat_messages_of_orphan_context_profiles',
        chat_messages_of_orphan_context_profiles,
        null,
        null
    from counts
    union all
    select
        'chat_messages_without_context_profile',
        chat_messages_without_context_profile,
        null,
        null
    from counts
),

summary as (
    select
        metric::text as metric,
        value::numeric as value,
        expected::numeric as expected,
        case
            when check_kind = 'equal' then value = expected
            when check_kind = 'at_most' then value <= expected
        end as passed
    from metrics
)

select * from summary
