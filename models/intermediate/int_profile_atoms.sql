{{ config(materialized='view') }}
-- One row per value a mapped key contributes, normalised (spec §3): a scalar's text, each kept
-- element of an array, each non-null sub-key of an object. Absent values contribute nothing.
-- `sort_key` orders a user's atoms as spec §4 takes them (context order, alias priority, position).
-- A view: its two readers take disjoint kinds (int_field_values the scalars and objects,
-- int_merged_fields the arrays), so each atom is computed once without writing ~34M rows at 1M users
-- and indexing them; `orchestrator explain` reaches one user's atoms through the user_id index of
-- int_profile_keys_classified.
-- `mapped` is read by three branches, each with its own kind filter: not materialized, so each
-- branch scans the keys it needs instead of spilling every mapped key to a tuplestore.
with mapped as not materialized (
    select
        legacy_profile_id,
        legacy_key,
        user_id,
        field,
        kind,
        legacy_value,
        context_order,
        priority,
        case when target = 'context_intent' then context_type end as intent_context_type
    from {{ ref('int_profile_keys_classified') }}
    where is_mapped and jsonb_typeof(legacy_value) <> 'null'
),

scalar_atoms as (
    select
        legacy_profile_id,
        legacy_key,
        user_id,
        intent_context_type,
        field,
        kind,
        sub_key,
        sort_key,
        to_jsonb(normalised) as atom_value
    from (
        select
            legacy_profile_id,
            legacy_key,
            user_id,
            intent_context_type,
            field,
            kind,
            null::text as sub_key,
            {{ atom_sort_key('context_order', 'priority', 0) }} as sort_key,
            {{ normalise_scalar('legacy_value') }} as normalised
        from mapped
        where kind = 'scalar'
    ) as scalars
    where normalised is not null
),

array_atoms as (
    select
        legacy_profile_id,
        legacy_key,
        user_id,
        intent_context_type,
        field,
        kind,
        sub_key,
        sort_key,
        to_jsonb(normalised) as atom_value
    from (
        select
            mapped.legacy_profile_id,
            mapped.legacy_key,
            mapped.user_id,
            mapped.intent_context_type,
            mapped.field,
            mapped.kind,
            null::text as sub_key,
            {{ atom_sort_key('mapped.context_order', 'mapped.priority', 'element.position') }} as sort_key,
            {{ normalise_scalar('element.value') }} as normalised
        from mapped
        cross join
            lateral jsonb_array_elements(
                -- a lone string, number or boolean is a one-element array
                case
                    when jsonb_typeof(mapped.legacy_value) = 'array' then mapped.legacy_value
                    else jsonb_build_array(mapped.legacy_value)
                end
            ) with ordinality as element (value, position)
        where mapped.kind = 'array'
    ) as elements
    where normalised is not null
),

object_atoms as (
    select
        mapped.legacy_profile_id,
        mapped.legacy_key,
        mapped.user_id,
        mapped.intent_context_type,
        mapped.field,
        mapped.kind,
        entry.key as sub_key,
        {{ atom_sort_key('mapped.context_order', 'mapped.priority', 0) }} as sort_key,
        entry.value as atom_value
    from mapped
    cross join lateral jsonb_each(mapped.legacy_value) as entry
    where mapped.kind = 'object' and jsonb_typeof(entry.value) <> 'null'
),

atoms as (
    select * from scalar_atoms
    union all
    select * from array_atoms
    union all
    select * from object_atoms
)

select * from atoms
