-- One row per distinct (user, context type) among non-orphan ContextProfiles: the ContextIntents
-- to create (spec §4, §7), with their timestamps. created_at / updated_at: the earliest createdAt /
-- latest updatedAt of the legacy Profiles attached to the pair's ContextProfiles, else of the
-- ContextProfiles themselves.
with context_profiles as (
    select * from {{ ref('stg_legacy__context_profiles') }}
),

users as (
    select * from {{ ref('stg_legacy__users') }}
),

legacy_profiles as (
    select * from {{ ref('int_legacy_profiles_ordered') }}
    where orphan_reason is null
),

pairs as (
    select
        context_profiles.user_id,
        context_profiles.context_type,
        min(context_profiles.created_at) as context_profiles_created_at,
        max(context_profiles.updated_at) as context_profiles_updated_at,
        count(*) as context_profile_count
    from context_profiles
    inner join users
        on context_profiles.user_id = users.user_id
    group by context_profiles.user_id, context_profiles.context_type
),

profile_times as (
    select
        user_id,
        context_type,
        min(created_at) as created_at,
        max(updated_at) as updated_at
    from legacy_profiles
    group by user_id, context_type
),

intents as (
    select
        pairs.user_id,
        pairs.context_type,
        pairs.context_profile_count,
        coalesce(profile_times.created_at, pairs.context_profiles_created_at) as created_at,
        coalesce(profile_times.updated_at, pairs.context_profiles_updated_at) as updated_at
    from pairs
    left join profile_times
        on
            pairs.user_id = profile_times.user_id
            and pairs.context_type = profile_times.context_type
)

select * from intents
