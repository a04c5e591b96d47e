-- One row per figure or check of the verification (spec §7; ORIGINAL_PLAN.md's verification list),
-- in this order: an unpivot of the one row of migration_counts, which counts them all in one pass.
-- `expected` and `passed` are NULL for informational figures. `check_kind` decides how a check
-- passes: `equal` (value = expected) or `at_most` (value <= expected).
with counts as (
    select * from {{ ref('migration_counts') }}
),

metrics as (
    select figures.*
    from counts
    cross join lateral (
        values
        ('users', counts.users, null::numeric, null::text),
        ('profiles', counts.profiles, counts.users, 'equal'),
        ('users_with_one_profile', counts.profile_users, counts.users, 'equal'),
        ('context_profiles', counts.context_profiles, null, null),
        ('context_profiles_migrated', counts.context_profiles_migrated, null, null),
        ('orphan_context_profiles', counts.orphan_context_profiles, null, null),
        ('context_intents', counts.context_intents, counts.intent_pairs, 'equal'),
        ('duplicate_context_profiles', counts.context_profiles_migrated - counts.intent_pairs, null, null),
        ('legacy_profiles', counts.legacy_profiles, null, null),
        ('legacy_profiles_migrated', counts.legacy_profiles_migrated, null, null),
        ('legacy_profiles_of_orphan_context_profiles', counts.legacy_profiles_of_orphan_context_profiles, null, null),
        ('orphan_legacy_profiles', counts.orphan_legacy_profiles, null, null),
        ('object_blobs', counts.object_blobs, null, null),
        ('null_blobs', counts.null_blobs, null, null),
        ('non_object_blobs', counts.non_object_blob_rows, counts.non_object_blobs, 'equal'),
        ('keys_seen', counts.keys_seen, null, null),
        ('keys_mapped', counts.keys_mapped, null, null),
        ('keys_unmapped', counts.keys_unmapped, null, null),
        ('keys_accounted', counts.keys_mapped + counts.keys_unmapped, counts.keys_seen, 'equal'),
        ('conflicts', counts.conflicts, null, null),
        ('users_with_conflicts', counts.users_with_conflicts, null, null),
        (
            'conflict_rate',
            case when counts.users = 0 then 0 else counts.users_with_conflicts::numeric / counts.users end,
            -- the project's threshold (dbt_project.yml), which promote's gate uses by default too
            {{ var('max_conflict_rate') }},
            'at_most'
        ),
        ('conflicts_decided', counts.conflicts_decided, null, null),
        -- a stale decision does not fail the dry run (it is built and reviewable); promote refuses it
        ('decisions_stale', counts.decisions_stale, 0, 'equal'),
        ('completeness_out_of_range', counts.completeness_out_of_range, 0, 'equal'),
        ('chat_messages', counts.chat_messages, null, null),
        (
            'chat_messages_mapped_to_one_intent',
            counts.chat_messages_mapped_to_one_intent,
            counts.chat_messages_of_migrated_context_profiles,
            'equal'
        ),
        ('chat_messages_of_orphan_context_profiles', counts.chat_messages_of_orphan_context_profiles, null, null),
        ('chat_messages_without_context_profile', counts.chat_messages_without_context_profile, null, null)
    ) as figures (metric, value, expected, check_kind)
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
