{{ config(indexes=[{'columns': ['user_id']}]) }}
-- One row per top-level key of every legacy object blob (orphans included): where the key goes
-- (the field map), or why it is unmapped (spec §2, §3, §5). Every blob is parsed here, once.
with profiles as (
    select * from {{ ref('int_legacy_profiles_ordered') }}
    where data_type = 'object'
),

-- read by three lookups: not materialized, since a CTE scan would keep the whole build serial
-- (CTE scans are parallel-restricted)
field_map as not materialized (
    select * from {{ ref('field_map') }}
),

-- the map row a key takes in a profile of a given context type: its intent row for that type or its
-- shared row, whichever comes first in the field map
intent_rows as (
    select distinct on (legacy_key, context_type)
        legacy_key,
        context_type,
        field,
        kind,
        priority,
        target
    from field_map
    where target = 'context_intent'
    order by legacy_key, context_type, priority
),

shared_rows as (
    select distinct on (legacy_key)
        legacy_key,
        field,
        kind,
        priority,
        target
    from field_map
    where target = 'profile'
    order by legacy_key, priority
),

known_keys as (
    select distinct legacy_key from field_map
),

profile_keys as (
    select
        profiles.legacy_profile_id,
        profiles.context_profile_id,
        profiles.user_id,
        profiles.context_type,
        profiles.orphan_reason,
        profiles.context_order,
        entry.key as legacy_key,
        entry.value as legacy_value
    from profiles
    cross join lateral jsonb_each(profiles.profile_data) as entry
),

-- a key's candidate rows: its intent row for this context type and its shared row
candidates as (
    select
        profile_keys.*,
        intent_rows.target as intent_target,
        intent_rows.field as intent_field,
        intent_rows.kind as intent_kind,
        shared_rows.target as shared_target,
        shared_rows.field as shared_field,
        shared_rows.kind as shared_kind,
        known_keys.legacy_key is not null as is_known,
        -- the intent row wins when it exists and comes first in the field map (priorities are unique)
        coalesce(intent_rows.priority < shared_rows.priority, intent_rows.priority is not null) as intent_row_wins,
        least(intent_rows.priority, shared_rows.priority) as priority
    from profile_keys
    left join known_keys
        on profile_keys.legacy_key = known_keys.legacy_key
    left join intent_rows
        on
            profile_keys.legacy_key = intent_rows.legacy_key
            and profile_keys.context_type = intent_rows.context_type
    left join shared_rows
        on profile_keys.legacy_key = shared_rows.legacy_key
),

matched as (
    select
        legacy_profile_id,
        context_profile_id,
        user_id,
        context_type,
        orphan_reason,
        context_order,
        legacy_key,
        legacy_value,
        is_known,
        priority,
        case when intent_row_wins then intent_target else shared_target end as target,
        case when intent_row_wins then intent_field else shared_field end as field,
        case when intent_row_wins then intent_kind else shared_kind end as kind
    from candidates
),

classified as (
    select
        legacy_profile_id,
        context_profile_id,
        user_id,
        context_type,
        context_order,
        legacy_key,
        legacy_value,
        target,
        field,
        kind,
        priority,
        -- precedence (spec §5): an orphan reason beats every other; wrong_context beats type_mismatch
        case
            when orphan_reason is not null then orphan_reason
            when not is_known then 'unknown_key'
            when field is null then 'wrong_context'
            when {{ is_type_mismatch('legacy_value', 'kind') }} then 'type_mismatch'
        end as unmapped_reason
    from matched
)

select
    *,
    unmapped_reason is null as is_mapped
from classified
