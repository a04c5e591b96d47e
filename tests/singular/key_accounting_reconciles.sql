-- Nothing is lost (spec §5): every top-level key of every object blob is mapped or logged exactly
-- once, and every non-object blob is logged once. Counted per legacy profile, so a loss and a
-- duplicate elsewhere cannot cancel out.
with keys_seen as (
    select
        legacy_profile_id,
        count(*) as keys_seen,
        count(*) filter (where is_mapped) as keys_mapped
    from {{ ref('int_profile_keys_classified') }}
    group by legacy_profile_id
),

keys_logged as (
    select
        legacy_profile_id,
        count(*) filter (where key is not null) as keys_unmapped,
        count(*) filter (where key is null) as blob_rows
    from {{ ref('migration_unmapped_fields') }}
    group by legacy_profile_id
),

blobs as (
    select
        legacy_profile_id,
        data_type,
        case
            when data_type = 'object' then (select count(*) from jsonb_object_keys(legacy_profiles.profile_data))
            else 0
        end as keys_in_blob
    from {{ ref('int_legacy_profiles_ordered') }} as legacy_profiles
),

compared as (
    select
        blobs.legacy_profile_id,
        blobs.data_type,
        blobs.keys_in_blob,
        coalesce(keys_seen.keys_seen, 0) as keys_seen,
        coalesce(keys_seen.keys_mapped, 0) as keys_mapped,
        coalesce(keys_logged.keys_unmapped, 0) as keys_unmapped,
        coalesce(keys_logged.blob_rows, 0) as blob_rows
    from blobs
    left join keys_seen
        on blobs.legacy_profile_id = keys_seen.legacy_profile_id
    left join keys_logged
        on blobs.legacy_profile_id = keys_logged.legacy_profile_id
)

select *
from compared
where
    keys_seen <> keys_in_blob
    or keys_mapped + keys_unmapped <> keys_seen
    or blob_rows <> case when data_type in ('array', 'string', 'number', 'boolean') then 1 else 0 end
