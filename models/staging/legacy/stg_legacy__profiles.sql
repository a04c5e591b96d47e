{{ config(tags=['user_batched']) }}
{#- a partial rebuild (var user_scope) keeps only the listed users' rows (a table then: dbt_project.yml);
    one batch of a batched dry run (var batch_index) keeps its batch's users (macros/user_batches.sql) -#}
{%- set user_scope = source('migration_meta', 'user_scope') %}
with source as (
    select legacy.* from {{ source('legacy', 'Profile') }} as legacy
    {%- if var('user_scope', false) %}
        where legacy."contextProfileId" in (
                select context_profiles."id"
                from {{ source('legacy', 'ContextProfile') }} as context_profiles
                inner join {{ user_scope }} as scope
                    on context_profiles."userId" = scope.user_id
            )
    {%- elif batch_index() is not none %}
        -- the batch of the profile's user (a missing ContextProfile hashes as no user)
        left join {{ source('legacy', 'ContextProfile') }} as context_profiles
            on legacy."contextProfileId" = context_profiles."id"
        where {{ in_current_batch('context_profiles."userId"') }}
    {%- endif %}
),

renamed as (
    select
        "id" as legacy_profile_id,
        "contextProfileId" as context_profile_id,
        "data" as profile_data,
        "createdAt" as created_at,
        "updatedAt" as updated_at
    from source
)

select * from renamed
