{{ config(materialized='view') }}
-- One row per top-level key of every legacy object blob, and one per non-object blob (key NULL):
-- where it came from, what it normalised to, where it went and what became of it. A view, read one
-- user at a time by `orchestrator explain`: every window below partitions by user_id, so a filter on
-- user_id reaches the (indexed) intermediate tables. It reads the models' results; the merge rules
-- live only in the intermediate models.
with keys as (
    select * from {{ ref('int_profile_keys_classified') }}
),

atoms as (
    select * from {{ ref('int_profile_atoms') }}
),

legacy_profiles as (
    select * from {{ ref('int_legacy_profiles_ordered') }}
),

-- the conflicts a reviewer's decision settled (spec §11): their chosen value is the decided one
decided_conflicts as (
    select
        user_id,
        context_type,
        field,
        chosen
    from {{ ref('migration_conflicts') }}
    where decided_by = 'reviewer'
),

-- each atom with the value a decision chose for its target, if any
atoms_with_decisions as (
    select
        atoms.*,
        decided_conflicts.chosen as decided_value
    from atoms
    left join decided_conflicts
        on
            atoms.user_id = decided_conflicts.user_id
            and coalesce(atoms.intent_context_type, '') = coalesce(decided_conflicts.context_type, '')
            and decided_conflicts.field
            = case when atoms.kind = 'object' then atoms.field || '.' || atoms.sub_key else atoms.field end
),

-- each atom against its group: the first atom of a single-valued target (scalar, object sub-key) is
-- the chosen one, or the first atom of the value a decision chose; an array element is kept at its
-- first occurrence
ranked_atoms as (
    select
        atoms.legacy_profile_id,
        atoms.legacy_key,
        atoms.user_id,
        atoms.kind,
        atoms.sub_key,
        atoms.sort_key,
        atoms.atom_value,
        first_value(atoms.atom_value) over single_valued as chosen_value,
        first_value(atoms.legacy_profile_id) over single_valued as chosen_legacy_profile_id,
        atoms.sort_key = min(atoms.sort_key) over same_value as is_first_occurrence
    from atoms_with_decisions as atoms
    window
        single_valued as (
            partition by atoms.user_id, atoms.intent_context_type, atoms.field, atoms.sub_key
            order by coalesce(atoms.atom_value = atoms.decided_value, false) desc, atoms.sort_key
        ),
        same_value as (
            partition by atoms.user_id, atoms.intent_context_type, atoms.field, atoms.sub_key, atoms.atom_value
        )
),

atom_outcomes as (
    select
        ranked_atoms.*,
        case
            when
                ranked_atoms.kind = 'array'
                then case when ranked_atoms.is_first_occurrence then 'kept' else 'duplicate' end
            when ranked_atoms.atom_value <> ranked_atoms.chosen_value then 'lost_conflict'
            when
                ranked_atoms.is_first_occurrence
                and ranked_atoms.legacy_profile_id = ranked_atoms.chosen_legacy_profile_id
                then 'chosen'
            else 'same_as_chosen'
        end as atom_outcome
    from ranked_atoms
),

key_outcomes as (
    select
        atom_outcomes.user_id,
        atom_outcomes.legacy_profile_id,
        atom_outcomes.legacy_key,
        case
            when min(atom_outcomes.kind) = 'scalar' then min(atom_outcomes.atom_value #>> '{}')
        end as scalar_value,
        coalesce(
            jsonb_agg(atom_outcomes.atom_value order by atom_outcomes.sort_key)
            filter (where atom_outcomes.kind = 'array'),
            jsonb_object_agg(atom_outcomes.sub_key, atom_outcomes.atom_value)
            filter (where atom_outcomes.kind = 'object')
        ) as structured_value,
        count(*) filter (where atom_outcomes.atom_outcome = 'lost_conflict') as lost,
        count(*) filter (where atom_outcomes.atom_outcome = 'duplicate') as duplicates,
        count(*) filter (where atom_outcomes.atom_outcome in ('chosen', 'kept')) as won,
        count(*) as atom_count,
        -- built by concatenation, not jsonb_strip_nulls (which would also strip nulls inside values)
        jsonb_agg(
            jsonb_build_object('value', atom_outcomes.atom_value, 'outcome', atom_outcomes.atom_outcome)
            || case
                when atom_outcomes.sub_key is not null then jsonb_build_object('sub_key', atom_outcomes.sub_key)
                else '{}'::jsonb
            end
            || case
                when atom_outcomes.atom_outcome = 'lost_conflict'
                    then jsonb_build_object(
                            'chosen_value', atom_outcomes.chosen_value,
                            'chosen_from_legacy_profile_id', atom_outcomes.chosen_legacy_profile_id
                        )
                else '{}'::jsonb
            end
            order by atom_outcomes.sort_key
        ) as atom_details
    from atom_outcomes
    group by atom_outcomes.user_id, atom_outcomes.legacy_profile_id, atom_outcomes.legacy_key
),

key_rows as (
    select
        keys.user_id,
        keys.context_type,
        keys.context_profile_id,
        keys.legacy_profile_id,
        keys.context_order,
        keys.legacy_key,
        keys.legacy_value,
        keys.target,
        case when keys.target = 'context_intent' then keys.context_type end as target_context_type,
        keys.field,
        keys.kind,
        coalesce(to_jsonb(key_outcomes.scalar_value), key_outcomes.structured_value) as normalised_value,
        case
            when not keys.is_mapped then 'unmapped'
            when key_outcomes.atom_count is null then 'absent'
            when key_outcomes.lost = key_outcomes.atom_count then 'lost_conflict'
            when key_outcomes.lost > 0 then 'partly_lost_conflict'
            when key_outcomes.duplicates = key_outcomes.atom_count then 'deduplicated'
            when key_outcomes.duplicates > 0 then 'partly_deduplicated'
            when
                key_outcomes.won = key_outcomes.atom_count
                then case when keys.kind = 'array' then 'merged' else 'chosen' end
            else 'same_as_chosen'
        end as outcome,
        keys.unmapped_reason,
        key_outcomes.atom_details
    from keys
    left join key_outcomes
        on
            keys.user_id = key_outcomes.user_id
            and keys.legacy_profile_id = key_outcomes.legacy_profile_id
            and keys.legacy_key = key_outcomes.legacy_key
),

blob_rows as (
    select
        user_id,
        context_type,
        context_profile_id,
        legacy_profile_id,
        context_order,
        null::text as legacy_key,
        profile_data as legacy_value,
        null::text as target,
        null::text as target_context_type,
        null::text as field,
        null::text as kind,
        null::jsonb as normalised_value,
        'unmapped' as outcome,
        coalesce(orphan_reason, 'not_an_object') as unmapped_reason,
        null::jsonb as atom_details
    from legacy_profiles
    where data_type in ('array', 'string', 'number', 'boolean')
),

provenance as (
    select * from key_rows
    union all
    select * from blob_rows
)

select * from provenance
