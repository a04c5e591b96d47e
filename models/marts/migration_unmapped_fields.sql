-- One row per legacy key that does not migrate, and one per non-object blob (spec §5), with the
-- original JSON verbatim. Orphans' keys are here with the orphan reason.
with keys as (
    select * from {{ ref('int_profile_keys_classified') }}
    where not is_mapped
),

non_object_blobs as (
    select * from {{ ref('int_legacy_profiles_ordered') }}
    where data_type in ('array', 'string', 'number', 'boolean')
),

unmapped_keys as (
    select
        user_id,
        context_type,
        context_profile_id,
        legacy_profile_id,
        legacy_key as key,
        legacy_value as value,
        unmapped_reason as reason
    from keys
),

unmapped_blobs as (
    select
        user_id,
        context_type,
        context_profile_id,
        legacy_profile_id,
        null::text as key,
        profile_data as value,
        coalesce(orphan_reason, 'not_an_object') as reason
    from non_object_blobs
),

unmapped as (
    select * from unmapped_keys
    union all
    select * from unmapped_blobs
)

select * from unmapped
