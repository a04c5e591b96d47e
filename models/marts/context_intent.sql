-- One row per distinct (user, context type) among non-orphan ContextProfiles: the ContextIntent
-- (spec §4, §7). Duplicate ContextProfiles of one type merge into one intent, in context order.
with intents as (
    select * from {{ ref('int_context_intents') }}
),

scored as (
    select * from {{ ref('int_scored_rows') }}
    where context_type is not null
),

context_intents as (
    select
        {{ context_intent_id('intents.user_id', 'intents.context_type') }} as id,
        intents.user_id,
        intents.context_type,
        {%- for spec in intent_fields() %}
            {{ pivot_field('scored.fields', spec, empty_as_null=true) }} as {{ spec.column }},
        {%- endfor %}
        scored.completeness,
        scored.missing,
        intents.created_at::timestamp(3) as created_at,
        intents.updated_at::timestamp(3) as updated_at
    from intents
    inner join scored
        on
            intents.user_id = scored.user_id
            and intents.context_type = scored.context_type
)

select * from context_intents
