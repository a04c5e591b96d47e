-- One row: every figure of the verification over the whole dry run (all users, every batch), the sum
-- of the per-owner counts (migration_counts_by_owner) and of the per-context-profile chat-message
-- counts (migration_chat_message_counts). migration_summary unpivots it into one row per figure or
-- check. A sync round or catch-up brings those two up to date for what it rebuilt, then sums them
-- again here: narrow rows, instead of every model of the dry run counted again.
with owner_counts as (
    select * from {{ ref('migration_counts_by_owner') }}
),

chat_message_counts as (
    select * from {{ ref('migration_chat_message_counts') }}
),

-- sums are 0, not NULL, over no rows
per_owner as (
    select
        coalesce(sum(users), 0) as users,
        coalesce(sum(profile_users), 0) as profile_users,
        coalesce(sum(profiles), 0) as profiles,
        coalesce(sum(context_profiles), 0) as context_profiles,
        coalesce(sum(context_profiles_migrated), 0) as context_profiles_migrated,
        coalesce(sum(orphan_context_profiles), 0) as orphan_context_profiles,
        coalesce(sum(context_intents), 0) as context_intents,
        coalesce(sum(legacy_profiles), 0) as legacy_profiles,
        coalesce(sum(legacy_profiles_migrated), 0) as legacy_profiles_migrated,
        coalesce(sum(legacy_profiles_of_orphan_context_profiles), 0) as legacy_profiles_of_orphan_context_profiles,
        coalesce(sum(orphan_legacy_profiles), 0) as orphan_legacy_profiles,
        coalesce(sum(object_blobs), 0) as object_blobs,
        coalesce(sum(null_blobs), 0) as null_blobs,
        coalesce(sum(non_object_blobs), 0) as non_object_blobs,
        coalesce(sum(keys_seen), 0) as keys_seen,
        coalesce(sum(keys_mapped), 0) as keys_mapped,
        coalesce(sum(keys_unmapped), 0) as keys_unmapped,
        coalesce(sum(non_object_blob_rows), 0) as non_object_blob_rows,
        coalesce(sum(conflicts), 0) as conflicts,
        coalesce(sum(users_with_conflicts), 0) as users_with_conflicts,
        coalesce(sum(conflicts_decided), 0) as conflicts_decided,
        coalesce(sum(decisions_stale), 0) as decisions_stale,
        coalesce(sum(intent_pairs), 0) as intent_pairs,
        coalesce(sum(profile_completeness_out_of_range + intent_completeness_out_of_range), 0)
            as completeness_out_of_range
    from owner_counts
),

per_context_profile as (
    select
        coalesce(sum(chat_messages), 0) as chat_messages,
        coalesce(sum(chat_messages_of_migrated_context_profiles), 0) as chat_messages_of_migrated_context_profiles,
        coalesce(sum(chat_messages_mapped_to_one_intent), 0) as chat_messages_mapped_to_one_intent,
        coalesce(sum(chat_messages_of_orphan_context_profiles), 0) as chat_messages_of_orphan_context_profiles,
        coalesce(sum(chat_messages_without_context_profile), 0) as chat_messages_without_context_profile
    from chat_message_counts
),

-- each side is one aggregate row: the cross join makes exactly one row
counts as (
    select
        per_owner.users,
        per_owner.profile_users,
        per_owner.profiles,
        per_owner.context_profiles,
        per_owner.context_profiles_migrated,
        per_owner.orphan_context_profiles,
        per_owner.context_intents,
        per_owner.legacy_profiles,
        per_owner.legacy_profiles_migrated,
        per_owner.legacy_profiles_of_orphan_context_profiles,
        per_owner.orphan_legacy_profiles,
        per_owner.object_blobs,
        per_owner.null_blobs,
        per_owner.non_object_blobs,
        per_owner.keys_seen,
        per_owner.keys_mapped,
        per_owner.keys_unmapped,
        per_owner.non_object_blob_rows,
        per_owner.conflicts,
        per_owner.users_with_conflicts,
        per_owner.conflicts_decided,
        per_owner.decisions_stale,
        per_context_profile.chat_messages,
        per_context_profile.chat_messages_of_migrated_context_profiles,
        per_context_profile.chat_messages_mapped_to_one_intent,
        per_context_profile.chat_messages_of_orphan_context_profiles,
        per_context_profile.chat_messages_without_context_profile,
        per_owner.intent_pairs,
        per_owner.completeness_out_of_range
    from per_owner
    cross join per_context_profile
)

select * from counts
