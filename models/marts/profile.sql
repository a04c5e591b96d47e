-- One row per existing legacy User: the unified Profile (spec §4, §7). Users with no data get an
-- empty profile (arrays `[]`, objects `{}`, scalars NULL, completeness 0).
with users as (
    select * from {{ ref('stg_legacy__users') }}
),

scored as (
    select * from {{ ref('int_scored_rows') }}
    where context_type is null
),

legacy_profiles as (
    select * from {{ ref('int_legacy_profiles_ordered') }}
    where orphan_reason is null
),

profile_times as (
    select
        user_id,
        min(created_at) as created_at,
        max(updated_at) as updated_at
    from legacy_profiles
    group by user_id
),

profiles as (
    select
        {{ profile_id('users.user_id') }} as id,
        users.user_id,
        {%- for spec in profile_fields() %}
            {{ pivot_field('scored.fields', spec) }} as {{ spec.column }},
        {%- endfor %}
        scored.completeness,
        scored.missing,
        coalesce(profile_times.created_at, users.created_at)::timestamp(3) as created_at,
        coalesce(profile_times.updated_at, users.updated_at)::timestamp(3) as updated_at
    from users
    inner join scored
        on users.user_id = scored.user_id
    left join profile_times
        on users.user_id = profile_times.user_id
)

select * from profiles
