-- One row per reviewer decision this build read (spec §11): what it chose, who decided, and whether
-- it applied. A decision applies when its conflict exists and its value is among the conflict's values
-- (then migration_conflicts says decided_by = 'reviewer' for that conflict, the one decision naming
-- it); otherwise it is stale and the first value was migrated. Stale decisions block promote.
with decisions as (
    select * from {{ ref('stg_review__decisions') }}
),

conflicts as (
    select * from {{ ref('migration_conflicts') }}
),

decision_status as (
    select
        decisions.user_id,
        decisions.context_type,
        decisions.field,
        decisions.decided_value,
        decisions.reviewer,
        decisions.decided_at,
        decisions.note,
        decisions.source_file_sha256,
        case
            when conflicts.decided_by = 'reviewer' then 'applied'
            else 'stale'
        end as status,
        case
            when conflicts.user_id is null then 'no_conflict'
            when conflicts.decided_by <> 'reviewer' then 'value_not_among_values'
        end as stale_reason
    from decisions
    left join conflicts
        on
            decisions.user_id = conflicts.user_id
            and decisions.field = conflicts.field
            and coalesce(decisions.context_type, '') = coalesce(conflicts.context_type, '')
)

select * from decision_status
