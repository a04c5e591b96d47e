with source as (
    select * from {{ legacy_source('Profile') }}
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
