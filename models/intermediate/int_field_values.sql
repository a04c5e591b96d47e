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

-- each atom marked when a decision names its value (jsonb equality, as values are told apart: a
-- decided 1.00 is the value 1.0). A hash join against the tiny decisions table on the user, the
-- field and the value; the context type and sub-key (NULL for shared fields, scalars) are compared
-- on the few rows that match. It comes before the sort below, so the plan keeps its shape.
marked_atoms as (
    select
        atoms.user_id,
        atoms.intent_context_type,
        atoms.field,
        atoms.kind,
        atoms.sub_key,
        atoms.atom_value,
        atoms.sort_key,
        decisions.user_id is not null as is_decided
    from atoms
    left join decisions
        on
            atoms.user_id = decisions.user_id
            and atoms.field = decisions.field
            and atoms.atom_value = decisions.decided_value
            and atoms.intent_context_type is not distinct from decisions.context_type
            and atoms.sub_key is not distinct from decisions.sub_key
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
        sort_key,
        is_decided
    from marked_atoms
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
        count(*) as distinct_value_count,
        -- at most one: one decision per target, and distinct values are never equal
        (array_agg(atom_value) filter (where is_decided))[1] as decided_value
    from first_appearances
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
