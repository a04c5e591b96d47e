-- One row per user and single-valued target (a scalar field, or one sub-key of an object field;
-- per context type for intent fields): its distinct values in order of first appearance and the
-- chosen one (spec §4): the first, unless a reviewer's decision (spec §11) names one of the values.
-- Two or more distinct values make a conflict. Arrays never conflict and are merged in
-- int_merged_fields.
with atoms as (
    select * from {{ ref('int_profile_atoms') }}
    where kind in ('scalar', 'object')
),

-- the decisions name a target as the conflict log does (`beliefs.religion`); field names hold no dot,
-- so the first dot splits an object field from its sub-key. A tiny table: split once here.
decisions as (
    select
        user_id,
        context_type,
        decided_value,
        split_part(field, '.', 1) as field,
        case when strpos(field, '.') > 0 then substr(field, strpos(field, '.') + 1) end as sub_key
    from {{ ref('stg_review__decisions') }}
),

-- each distinct value (jsonb equality: {"a":1,"b":2} = {"b":2,"a":1}, 30 <> "30") at its first
-- appearance, keeping that appearance's own JSON. The sort is by the grouping below first (kind
-- follows from the field: one kind per field), so the rows reach the aggregate already grouped: one
-- sort of the atoms, not one for the distinct values and another for the groups.
first_appearances as (
    select distinct on (user_id, intent_context_type, field, kind, sub_key, atom_value)
        user_id,
        intent_context_type,
        field,
        kind,
        sub_key,
        atom_value,
        sort_key
    from atoms
    order by user_id, intent_context_type, field, kind, sub_key, atom_value, sort_key
),

-- each distinct value marked when a decision names it (jsonb equality, as values are told apart: a
-- decided 1.00 is the value 1.0). Joined after the distinct values (equal values are decided alike),
-- so the tiny decisions table meets the rows in their sorted order and the plan keeps its one sort;
-- the context type and sub-key (NULL for shared fields, scalars) are compared on the few rows that
-- match the user, the field and the value.
marked_values as (
    select
        first_appearances.*,
        decisions.user_id is not null as is_decided
    from first_appearances
    left join decisions
        on
            first_appearances.user_id = decisions.user_id
            and first_appearances.field = decisions.field
            and first_appearances.atom_value = decisions.decided_value
            and first_appearances.intent_context_type is not distinct from decisions.context_type
            and first_appearances.sub_key is not distinct from decisions.sub_key
),

grouped as (
    select
        user_id,
        intent_context_type,
        field,
        kind,
        sub_key,
        jsonb_agg(atom_value order by sort_key) as distinct_values,
        count(*) as distinct_value_count,
        -- at most one: one decision per target, and distinct values are never equal
        (array_agg(atom_value) filter (where is_decided))[1] as decided_value
    from marked_values
    group by user_id, intent_context_type, field, kind, sub_key
),

-- a decision applies only to a conflict (two or more values) it names a value of; otherwise the
-- first value is migrated (a stale decision, counted in migration_decisions)
chosen as (
    select
        user_id,
        intent_context_type,
        field,
        kind,
        sub_key,
        distinct_values,
        distinct_value_count,
        case
            when distinct_value_count > 1 and decided_value is not null then decided_value
            else distinct_values -> 0
        end as chosen_value,
        case
            when distinct_value_count > 1 and decided_value is not null then 'reviewer'
            else 'first_value'
        end as decided_by
    from grouped
)

select * from chosen
