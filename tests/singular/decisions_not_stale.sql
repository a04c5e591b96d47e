{{ config(severity='warn') }}
-- A warning, not an error: a stale reviewer decision (its conflict is gone, or its value is no longer
-- among the conflict's values) leaves the dry run built and reviewable; promote's gate refuses it
-- until it is decided again or cleared (`orchestrator decisions list`).
select *
from {{ ref('migration_summary') }}
where metric = 'decisions_stale' and passed = false
