{#- a partial rebuild (var user_scope) keeps only the listed users' rows -#}
{%- set user_scope = source('migration_meta', 'user_scope') %}
with source as (
    select * from {{ source('legacy', 'Profile') }}
    {%- if var('user_scope', false) %}
    where "contextProfileId" in (
        select "id" from {{ source('legacy', 'ContextProfile') }}
        where "userId" in (select user_id from {{ user_scope }})
    )
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
