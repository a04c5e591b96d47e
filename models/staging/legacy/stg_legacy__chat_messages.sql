{#- a partial rebuild (var user_scope) keeps only the listed users' rows -#}
{%- set user_scope = source('migration_meta', 'user_scope') %}
with source as (
    select * from {{ source('legacy', 'ChatMessage') }}
    {%- if var('user_scope', false) %}
    where "contextProfileId" in (
        select "id" from {{ source('legacy', 'ContextProfile') }}
        where "userId" in (select user_id from {{ user_scope }})
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
