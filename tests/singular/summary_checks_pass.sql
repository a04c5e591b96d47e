-- Every verification check of the summary passes, but two that promote's gates judge and that leave
-- the dry run reviewable: the conflict rate (its own threshold, tested at warn severity in
-- conflict_rate_within_threshold.sql) and stale reviewer decisions (decisions_not_stale.sql).
select *
from {{ ref('migration_summary') }}
where passed = false and metric not in ('conflict_rate', 'decisions_stale')
