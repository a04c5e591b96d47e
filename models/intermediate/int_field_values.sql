-- One row per user and single-valued target (a scalar field, or one sub-key of an object field;
-- per context type for intent fields): its distinct values in order of first appearance and the
-- chosen (first) one (spec §4). Two or more distinct values make a conflict. Arrays never conflict
-- and are merged in int_merged_fields.
with atoms as (
    select * from {{ ref('int_profile_atoms') }}
    where kind in ('scalar', 'object')
),

-- each distinct value (jsonb equality: {"a":1,"b":2} = {"b":2,"a":1}, 30 <> "30") at its first
-- appearance, keeping that appearance's own JSON
first_appearances as (
    select distinct on (user_id, intent_context_type, field, sub_key, atom_value)
        user_id,
        intent_context_type,
        field,
        kind,
        sub_key,
        atom_value,
        sort_key
    from atoms
    order by user_id, intent_context_type, field, sub_key, atom_value, sort_key
),

grouped as (
    select
        user_id,
        intent_context_type,
        field,
        kind,
        sub_key,
        jsonb_agg(atom_value order by sort_key) as distinct_values,
        count(*) as distinct_value_count
    from first_appearances
    group by user_id, intent_context_type, field, kind, sub_key
)

select
    *,
    distinct_values -> 0 as chosen_value
from grouped
