-- One row per output row (each user's profile; each context intent): completeness and missing
-- (spec §6), scored against the `required_fields` seed. A required field is filled when it is
-- present after merging (a row in int_merged_fields).
with users as (
    select * from {{ ref('stg_legacy__users') }}
),

intents as (
    select * from {{ ref('int_context_intents') }}
),

required_fields as (
    select * from {{ ref('required_fields') }}
),

merged as (
    select * from {{ ref('int_merged_fields') }}
),

profile_scores as (
    select
        users.user_id,
        null::text as context_type,
        required_fields.field,
        required_fields.position,
        merged.field is not null as is_filled
    from users
    left join required_fields
        on required_fields.target = 'profile'
    left join merged
        on
            users.user_id = merged.user_id
            and merged.intent_context_type is null
            and required_fields.field = merged.field
),

intent_scores as (
    select
        intents.user_id,
        intents.context_type,
        required_fields.field,
        required_fields.position,
        merged.field is not null as is_filled
    from intents
    left join required_fields
        on intents.context_type = required_fields.target
    left join merged
        on
            intents.user_id = merged.user_id
            and intents.context_type = merged.intent_context_type
            and required_fields.field = merged.field
),

scores as (
    select * from profile_scores
    union all
    select * from intent_scores
),

scored as (
    select
        user_id,
        context_type,
        {{ completeness_score('count(field) filter (where is_filled)', 'count(field)') }} as completeness,
        coalesce(
            array_agg(field order by position) filter (where field is not null and not is_filled),
            '{}'::text[]
        ) as missing
    from scores
    group by user_id, context_type
)

select * from scored
