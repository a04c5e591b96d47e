{{ config(materialized='view') }}
-- One row per user and present target field (per context type for intent fields): the merged
-- value as jsonb (spec §4). Scalars: the chosen value; objects: the union of sub-keys with each
-- sub-key's chosen value; arrays: the union of elements, exact de-duplication, first occurrence
-- kept, in context order then array position. A field with no row here is absent.
-- A view: its one reader, int_scored_rows, aggregates these rows per output row at once, so ~14M
-- rows at 1M users are not written and read back (its grain and non-null values are tested there).
-- read by two branches with disjoint kind filters: not materialized, or the whole table would be
-- spilled to a tuplestore
with field_values as not materialized (
    select * from {{ ref('int_field_values') }}
),

array_atoms as (
    select * from {{ ref('int_profile_atoms') }}
    where kind = 'array'
),

scalars as (
    select
        user_id,
        intent_context_type,
        field,
        kind,
        chosen_value as merged_value
    from field_values
    where kind = 'scalar'
),

objects as (
    select
        user_id,
        intent_context_type,
        field,
        kind,
        jsonb_object_agg(sub_key, chosen_value) as merged_value
    from field_values
    where kind = 'object'
    group by user_id, intent_context_type, field, kind
),

array_elements as (
    select distinct on (user_id, intent_context_type, field, atom_value)
        user_id,
        intent_context_type,
        field,
        kind,
        atom_value,
        sort_key
    from array_atoms
    order by user_id, intent_context_type, field, atom_value, sort_key
),

arrays as (
    select
        user_id,
        intent_context_type,
        field,
        kind,
        jsonb_agg(atom_value order by sort_key) as merged_value
    from array_elements
    group by user_id, intent_context_type, field, kind
),

merged as (
    select * from scalars
    union all
    select * from objects
    union all
    select * from arrays
)

select * from merged
