-- One row per output row (grain user_id + context_type; NULL type = the user's Profile): its merged
-- fields as one jsonb object (field name -> merged value), completeness and missing (spec §6) scored
-- against the `required_fields` seed. A required field is filled when it is present after merging.
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

profile_fields as (
    select
        user_id,
        jsonb_object_agg(field, merged_value) as fields
    from merged
    where intent_context_type is null
    group by user_id
),

intent_fields as (
    select
        user_id,
        intent_context_type as context_type,
        jsonb_object_agg(field, merged_value) as fields
    from merged
    where intent_context_type is not null
    group by user_id, intent_context_type
),

output_rows as (
    select
        users.user_id,
        null::text as context_type,
        'profile' as required_for,
        coalesce(profile_fields.fields, '{}'::jsonb) as fields
    from users
    left join profile_fields
        on users.user_id = profile_fields.user_id
    union all
    select
        intents.user_id,
        intents.context_type,
        intents.context_type as required_for,
        coalesce(intent_fields.fields, '{}'::jsonb) as fields
    from intents
    left join intent_fields
        on
            intents.user_id = intent_fields.user_id
            and intents.context_type = intent_fields.context_type
),

with_missing as (
    select
        output_rows.user_id,
        output_rows.context_type,
        output_rows.fields,
        coalesce(cardinality(required_lists.required), 0) as required_count,
        array(
            select required.field
            from unnest(required_lists.required) with ordinality as required (field, position)
            where not output_rows.fields ? required.field
            order by required.position
        ) as missing
    from output_rows
    left join required_lists
        on output_rows.required_for = required_lists.target
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
