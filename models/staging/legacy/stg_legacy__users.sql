{{ config(tags=['user_batched']) }}
{#- a partial rebuild (var user_scope) keeps only the listed users' rows (a table then: dbt_project.yml);
    one batch of a batched dry run (var batch_index) keeps its batch's users (macros/user_batches.sql) -#}
{%- set user_scope = source('migration_meta', 'user_scope') %}
with source as (
    select legacy.* from {{ source('legacy', 'User') }} as legacy
    {%- if var('user_scope', false) %}
        where legacy."id" in (select scope.user_id from {{ user_scope }} as scope)
    {%- elif batch_index() is not none %}
        where {{ in_current_batch('legacy."id"') }}
    {%- endif %}
),

renamed as (
    select
        "id" as user_id,
        "email" as email,
        "name" as user_name,
        "createdAt" as created_at,
        "updatedAt" as updated_at
    from source
)

select * from renamed
