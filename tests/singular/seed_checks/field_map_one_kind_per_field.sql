-- Every target field has one kind in the field map: for the Profile (shared rows), and for each context
-- type's ContextIntent (intent rows of that type). int_merged_fields makes one row per user, output row,
-- field and kind, so this is what keeps a field from appearing twice in an output row's `fields`
-- (jsonb_object_agg would keep one of the two silently). Returns each field with more than one kind.
with field_map as (
    select * from {{ ref('field_map') }}
),

fields_with_kinds as (
    select
        target,
        context_type,
        field,
        string_agg(distinct kind, ', ' order by kind) as kinds
    from field_map
    group by target, context_type, field
    having count(distinct kind) > 1
)

select * from fields_with_kinds
