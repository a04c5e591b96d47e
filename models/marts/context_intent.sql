-- One row per distinct (user, context type) among non-orphan ContextProfiles: the ContextIntent
-- (spec §4, §7). Duplicate ContextProfiles of one type merge into one intent, in context order.
with intents as (
    select * from {{ ref('int_context_intents') }}
),

merged as (
    select * from {{ ref('int_merged_fields') }}
    where intent_context_type is not null
),

completeness as (
    select * from {{ ref('int_completeness') }}
    where context_type is not null
),

fields_by_intent as (
    select
        user_id,
        intent_context_type as context_type,
        jsonb_object_agg(field, merged_value) as fields
    from merged
    group by user_id, intent_context_type
),

context_intents as (
    select
        {{ context_intent_id('intents.user_id', 'intents.context_type') }} as id,
        intents.user_id,
        intents.context_type,
        {%- for spec in intent_fields() %}
            {{ pivot_field('fields_by_intent.fields', spec, empty_as_null=true) }} as {{ spec.column }},
        {%- endfor %}
        completeness.completeness,
        completeness.missing,
        intents.created_at::timestamp(3) as created_at,
        intents.updated_at::timestamp(3) as updated_at
    from intents
    left join fields_by_intent
        on
            intents.user_id = fields_by_intent.user_id
            and intents.context_type = fields_by_intent.context_type
    left join completeness
        on
            intents.user_id = completeness.user_id
            and intents.context_type = completeness.context_type
)

select * from context_intents
