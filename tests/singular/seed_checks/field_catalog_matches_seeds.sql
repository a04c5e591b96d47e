-- The marts' columns (macros/field_catalog.sql) and the business-rule seeds agree: every field the
-- field map targets is an output column of the same kind and table, and every required field is one.
with catalog (target, context_type, field, kind) as (
    {%- for spec in profile_fields() %}
        select
            'profile',
            null::text,
            '{{ spec.field }}',
            '{{ spec.kind }}'
        union all
    {%- endfor %}
    {%- for spec in intent_fields() %}
        select
            'context_intent',
            '{{ spec.context_type }}',
            '{{ spec.field }}',
            '{{ spec.kind }}'
        {%- if not loop.last %}
            union all
        {%- endif %}
    {%- endfor %}
),

field_map as (
    select * from {{ ref('field_map') }}
),

required_fields as (
    select * from {{ ref('required_fields') }}
),

unknown_map_targets as (
    select
        'field_map' as seed,
        field_map.field,
        field_map.context_type
    from field_map
    left join catalog
        on
            field_map.field = catalog.field
            and field_map.target = catalog.target
            and field_map.kind = catalog.kind
            and field_map.context_type is not distinct from catalog.context_type
    where catalog.field is null
),

unknown_required as (
    select
        'required_fields' as seed,
        required_fields.field,
        required_fields.target as context_type
    from required_fields
    left join catalog
        on
            required_fields.field = catalog.field
            and (
                (required_fields.target = 'profile' and catalog.target = 'profile')
                or required_fields.target = catalog.context_type
            )
    where catalog.field is null
),

sort_key_limits as (
    select
        'field_map' as seed,
        field_map.field,
        'priority must be between 0 and 4095 (macros/normalise.sql, atom_sort_key)' as context_type
    from field_map
    where field_map.priority not between 0 and 4095
)

select * from unknown_map_targets
union all
select * from unknown_required
union all
select * from sort_key_limits
