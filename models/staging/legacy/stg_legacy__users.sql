with source as (
    select * from {{ legacy_source('User') }}
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
