{{ config(severity='warn') }}
-- A warning, not an error: the conflict rate is judged by `orchestrator promote`'s gate
-- (--max-conflict-rate), where a reviewer can accept a higher rate explicitly.
select *
from {{ ref('migration_summary') }}
where metric = 'conflict_rate' and passed = false
