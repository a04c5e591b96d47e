{{ config(indexes=[{'columns': ['user_id']}]) }}
-- One row per legacy Profile: whether it is an orphan, what its blob is, and (for the profiles that
-- migrate) its position in the user's context order (spec §4).
with profiles as (
    select * from {{ ref('stg_legacy__profiles') }}
),

context_profiles as (
    select * from {{ ref('stg_legacy__context_profiles') }}
),

users as (
    select * from {{ ref('stg_legacy__users') }}
),

attached as (
    select
        profiles.legacy_profile_id,
        profiles.context_profile_id,
        profiles.profile_data,
        profiles.created_at,
        profiles.updated_at,
        context_profiles.user_id,
        context_profiles.context_type,
        context_profiles.created_at as context_profile_created_at,
        case
            when context_profiles.context_profile_id is null then 'orphan_profile'
            when users.user_id is null then 'orphan_context_profile'
        end as orphan_reason,
        case
            when profiles.profile_data is null then 'sql_null'
            else jsonb_typeof(profiles.profile_data)
        end as data_type
    from profiles
    left join context_profiles
        on profiles.context_profile_id = context_profiles.context_profile_id
    left join users
        on context_profiles.user_id = users.user_id
),

ordered as (
    select
        legacy_profile_id,
        context_profile_id,
        profile_data,
        created_at,
        updated_at,
        -- an orphan_profile has no context profile, so no user and no context type
        user_id,
        context_type,
        orphan_reason,
        data_type,
        case when orphan_reason is null then
                row_number() over (
                    partition by user_id, orphan_reason is null
                    order by
                        context_profile_created_at,
                        context_profile_id collate "C",
                        created_at,
                        legacy_profile_id collate "C"
                )
        end as context_order
    from attached
)

select * from ordered
