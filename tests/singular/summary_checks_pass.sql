-- Every verification check of the summary passes (the conflict rate is a promote gate with its
-- own threshold, tested at warn severity in conflict_rate_within_threshold.sql).
select *
from {{ ref('migration_summary') }}
where passed = false and metric <> 'conflict_rate'
