with source as (
    select * from {{ decisions_source() }}
),

renamed as (
    select
        user_id,
        context_type,
        field,
        value as decided_value,
        reviewer,
        decided_at,
        note,
        file_sha256 as source_file_sha256
    from source
)

select * from renamed
