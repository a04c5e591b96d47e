-- Nothing is lost (spec §5): every top-level key of every object blob is mapped or logged exactly
-- once, and every non-object blob is logged once. Counted per legacy profile, so a loss and a
-- duplicate elsewhere cannot cancel out. int_legacy_profile_key_counts holds, per legacy profile,
-- the keys of its blob (jsonb_object_keys) and the keys classified from it; one aggregate adds the
-- rows the unmapped log holds for it (no joins of millions of rows).
with counts as (
    select
        legacy_profile_id,
        data_type,
        keys_in_blob,
        keys_seen,
        keys_mapped,
        0 as keys_unmapped,
        0 as blob_rows
    from {{ ref('int_legacy_profile_key_counts') }}
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
