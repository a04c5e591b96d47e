with source as (
    select * from {{ legacy_source('ContextProfile') }}
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
