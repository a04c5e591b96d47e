-- One row per legacy profile id of int_legacy_profiles_ordered or int_profile_keys_classified: the
-- keys its blob holds and the keys classified from it (spec §5). The key accounting test and
-- migration_summary read these counts (2M narrow rows at 1M users) instead of the 27M classified
-- keys and the blobs again; a batched dry run counts them batch by batch, next to the rows it counts.
-- A legacy profile id with keys but no row in int_legacy_profiles_ordered gets data_type NULL.
with legacy_profiles as (
    select * from {{ ref('int_legacy_profiles_ordered') }}
),

profile_keys as (
    select * from {{ ref('int_profile_keys_classified') }}
),

-- grouped, not joined: a legacy profile listed twice counts its blob's keys twice, and the test sees it
counts as (
    select
        legacy_profile_id,
        user_id,
        orphan_reason,
        data_type,
        1 as legacy_profile_rows,
        case
            when data_type = 'object' then (select count(*) from jsonb_object_keys(legacy_profiles.profile_data))
            else 0
        end as keys_in_blob,
        0 as keys_seen,
        0 as keys_mapped
    from legacy_profiles
    union all
    select
        legacy_profile_id,
        user_id,
        null as orphan_reason,
        null as data_type,
        0 as legacy_profile_rows,
        0 as keys_in_blob,
        1 as keys_seen,
        case when is_mapped then 1 else 0 end as keys_mapped
    from profile_keys
),

key_counts as (
    select
        legacy_profile_id,
        -- the profile's user (the dangling "userId" of an orphan context profile; NULL for an orphan
        -- profile): a catch-up replaces the rows of the users it rebuilds (orchestrator/dry_run.py)
        max(user_id) as user_id,
        max(orphan_reason) as orphan_reason,
        max(data_type) as data_type,
        sum(legacy_profile_rows)::integer as legacy_profile_rows,
        sum(keys_in_blob)::integer as keys_in_blob,
        sum(keys_seen)::integer as keys_seen,
        sum(keys_mapped)::integer as keys_mapped
    from counts
    group by legacy_profile_id
)

select * from key_counts
