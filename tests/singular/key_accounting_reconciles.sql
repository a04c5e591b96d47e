-- Nothing is lost (spec §5): every top-level key of every object blob is mapped or logged exactly
-- once, and every non-object blob is logged once. Counted per legacy profile, so a loss and a
-- duplicate elsewhere cannot cancel out. One aggregate over the three relations (no joins of
-- millions of rows): each contributes its counts to its legacy profile's group.
with counts as (
    select
        legacy_profile_id,
        data_type,
        case
            when data_type = 'object' then (select count(*) from jsonb_object_keys(legacy_profiles.profile_data))
            else 0
        end as keys_in_blob,
        0 as keys_seen,
        0 as keys_mapped,
        0 as keys_unmapped,
        0 as blob_rows
    from {{ ref('int_legacy_profiles_ordered') }} as legacy_profiles
    union all
    select
        legacy_profile_id,
        null as data_type,
        0 as keys_in_blob,
        1 as keys_seen,
        case when is_mapped then 1 else 0 end as keys_mapped,
        0 as keys_unmapped,
        0 as blob_rows
    from {{ ref('int_profile_keys_classified') }}
    union all
    select
        legacy_profile_id,
        null as data_type,
        0 as keys_in_blob,
        0 as keys_seen,
        0 as keys_mapped,
        case when key is not null then 1 else 0 end as keys_unmapped,
        case when key is null then 1 else 0 end as blob_rows
    from {{ ref('migration_unmapped_fields') }}
),

compared as (
    select
        legacy_profile_id,
        -- NULL: a key or log row whose legacy profile is not in int_legacy_profiles_ordered
        max(data_type) as data_type,
        sum(keys_in_blob) as keys_in_blob,
        sum(keys_seen) as keys_seen,
        sum(keys_mapped) as keys_mapped,
        sum(keys_unmapped) as keys_unmapped,
        sum(blob_rows) as blob_rows
    from counts
    group by legacy_profile_id
)

select *
from compared
where
    data_type is null
    or keys_seen <> keys_in_blob
    or keys_mapped + keys_unmapped <> keys_seen
    or blob_rows <> case when data_type in ('array', 'string', 'number', 'boolean') then 1 else 0 end
