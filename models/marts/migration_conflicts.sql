-- One row per conflict (spec §4): a scalar field, an object sub-key or an intent field with two or
-- more distinct present values for one user. `values`: the distinct values in order of first
-- appearance; `chosen`: the one migrated, the first unless a reviewer's decision chose another
-- (`decided_by`, spec §11). `context_type` is NULL for shared (Profile) fields.
with field_values as (
    select * from {{ ref('int_field_values') }}
),

conflicts as (
    select
        user_id,
        intent_context_type as context_type,
        distinct_values as "values",
        chosen_value as chosen,
        decided_by,
        case when kind = 'object' then field || '.' || sub_key else field end as field
    from field_values
    where distinct_value_count > 1
)

select * from conflicts
