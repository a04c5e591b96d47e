-- One row per output row (grain user_id + context_type; NULL type = the user's Profile): its merged
-- fields as one jsonb object (field name -> merged value), completeness and missing (spec §6) scored
-- against the `required_fields` seed. A required field is filled when it is present after merging.
-- The planner guesses ~40,000 groups for the aggregate below (3M at 1M users: its input is a view
-- of three branches) and would pick a hash aggregate that spills most of its jsonb states to disk;
-- sorting the rows once is faster (the model: 58 s -> 46 s at 1M users).
{{ config(pre_hook="set local enable_hashagg = off") }}
with users as (
    select * from {{ ref('stg_legacy__users') }}
),

intents as (
    select * from {{ ref('int_context_intents') }}
),

merged as (
    select * from {{ ref('int_merged_fields') }}
),

-- the required fields of each target, in the order `missing` lists them
required_lists as (
    select
        target,
        array_agg(field order by position) as required
    from {{ ref('required_fields') }}
    group by target
),

-- every output row's fields in one aggregate over the merged fields sorted by row
row_fields as (
    select
        user_id,
        intent_context_type as context_type,
        -- one row per field (one kind per field in the field map): a second would be refused here
        {{ jsonb_object_agg_refusing_twice('field', 'merged_value') }} as fields
    from merged
    group by user_id, intent_context_type
),

-- the output rows (a user's Profile, then one per ContextIntent), with a join key that is equal for
-- the Profile's NULL context type
output_rows as (
    select
        user_id,
        null::text as context_type,
        'profile' as required_for
    from users
    union all
    select
        user_id,
        context_type,
        context_type as required_for
    from intents
),

with_fields as (
    select
        output_rows.user_id,
        output_rows.context_type,
        output_rows.required_for,
        coalesce(row_fields.fields, '{}'::jsonb) as fields
    from output_rows
    left join row_fields
        on
            output_rows.user_id = row_fields.user_id
            and coalesce(output_rows.context_type, '') = coalesce(row_fields.context_type, '')
),

with_missing as (
    select
        with_fields.user_id,
        with_fields.context_type,
        with_fields.fields,
        coalesce(cardinality(required_lists.required), 0) as required_count,
        array(
            select required.field
            from unnest(required_lists.required) with ordinality as required (field, position)
            where not with_fields.fields ? required.field
            order by required.position
        ) as missing
    from with_fields
    left join required_lists
        on with_fields.required_for = required_lists.target
),

scored as (
    select
        user_id,
        context_type,
        fields,
        {{ completeness_score('required_count - cardinality(missing)', 'required_count') }} as completeness,
        missing
    from with_missing
)

select * from scored
