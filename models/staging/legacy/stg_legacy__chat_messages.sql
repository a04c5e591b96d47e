with source as (
    select * from {{ legacy_source('ChatMessage') }}
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
