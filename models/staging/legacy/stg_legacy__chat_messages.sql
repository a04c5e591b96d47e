{#- a partial rebuild (var user_scope) keeps only the listed users' rows (a table then: dbt_project.yml) -#}
{%- set user_scope = source('migration_meta', 'user_scope') %}
with source as (
    select legacy.* from {{ source('legacy', 'ChatMessage') }} as legacy
    {%- if var('user_scope', false) %}
        where legacy."contextProfileId" in (
                select context_profiles."id"
                from {{ source('legacy', 'ContextProfile') }} as context_profiles
                inner join {{ user_scope }} as scope
                    on context_profiles."userId" = scope.user_id
            )
    {%- endif %}
),

renamed as (
    select
        "id" as chat_message_id,
        "contextProfileId" as context_profile_id,
        "role" as message_role,
        "createdAt" as created_at
    from source
)

select * from renamed
