{{ config(tags=['user_batched']) }}
{#- a partial rebuild (var user_scope) keeps only the listed users' rows (a table then: dbt_project.yml);
    one batch of a batched dry run (var batch_index) keeps its batch's users (macros/user_batches.sql) -#}
{%- set user_scope = source('migration_meta', 'user_scope') %}
with source as (
    select legacy.* from {{ source('legacy', 'ContextProfile') }} as legacy
    {%- if var('user_scope', false) %}
        where legacy."userId" in (select scope.user_id from {{ user_scope }} as scope)
    {%- elif batch_index() is not none %}
        where {{ in_current_batch('legacy."userId"') }}
    {%- endif %}
),

renamed as (
    select
        "id" as context_profile_id,
        "userId" as user_id,
        "contextType"::text as context_type,
        "tonePreference" as tone_preference,
        "createdAt" as created_at,
        "updatedAt" as updated_at
    from source
)

select * from renamed
