-- The HTML report's queries (orchestrator/report_html.py runs this file): every figure is aggregated
-- by PostgreSQL from the dry-run tables; Python only lays out the (small) aggregated rows and the
-- capped detail rows. Split into named sections ("-- name: ..."); report_html.py fills
-- {conflicts}, {unmapped}, {decisions}, {profile} and {context_intent} with quoted identifiers and
-- {conflict_order} / {unmapped_order} with the detail tables' order, and binds %(detail_rows)s and
-- %(cell_chars)s: a detail row's JSON values are read shortened to that many characters, with their
-- whole length (the page shows their start and how long they are; the CSV logs hold them whole).

-- name: conflicts_by_field
with numbered as (
    select context_type, field, row_number() over (order by {conflict_order}) as row_number
    from {conflicts}
)
select context_type, field, count(*) as conflicts, min(row_number) as first_row
from numbered
group by context_type, field
order by conflicts desc, field collate "C", context_type collate "C" nulls first;

-- name: conflicts
select
    shown.row_number, shown.user_id, shown.context_type, shown.field, shown.decided_by,
    left(shown."values"::text, %(cell_chars)s) as "values", length(shown."values"::text) as values_length,
    left(shown.chosen::text, %(cell_chars)s) as chosen, length(shown.chosen::text) as chosen_length
from (
    select row_number() over (order by {conflict_order}) as row_number, user_id, context_type, field, "values",
        chosen, decided_by
    from {conflicts}
    order by row_number
    limit %(detail_rows)s
) as shown
order by shown.row_number;

-- name: decisions
-- the reviewers' decisions the dry run read: applied ones (which conflict, who, when, why), then stale ones
select
    user_id, context_type, field, left(decided_value::text, %(cell_chars)s) as decided_value,
    length(decided_value::text) as decided_value_length, reviewer, decided_at, note, status, stale_reason
from {decisions}
order by status, field collate "C", context_type collate "C" nulls first, user_id collate "C"
limit %(detail_rows)s;

-- name: unmapped_by_reason
with numbered as (
    select reason, legacy_profile_id, row_number() over (order by {unmapped_order}) as row_number
    from {unmapped}
)
select reason, count(*) as keys, count(distinct legacy_profile_id) as profiles, min(row_number) as first_row
from numbered
group by reason
order by keys desc, reason collate "C";

-- name: unmapped_by_key
with numbered as (
    select key, reason, row_number() over (order by {unmapped_order}) as row_number
    from {unmapped}
)
select
    key,
    count(*) as occurrences,
    string_agg(distinct reason, ', ' order by reason) as reasons,
    min(row_number) as first_row
from numbered
group by key
order by occurrences desc, key collate "C" nulls first
limit %(detail_rows)s;

-- name: unmapped
select
    shown.row_number, shown.user_id, shown.context_type, shown.context_profile_id, shown.legacy_profile_id,
    shown.key, left(shown.value::text, %(cell_chars)s) as value, length(shown.value::text) as value_length,
    shown.reason
from (
    select row_number() over (order by {unmapped_order}) as row_number, user_id, context_type,
        context_profile_id, legacy_profile_id, key, value, reason
    from {unmapped}
    order by row_number
    limit %(detail_rows)s
) as shown
order by shown.row_number;

-- name: totals
select
    (select count(*) from {conflicts}) as conflicts,
    (select count(*) from {decisions}) as decisions,
    (select count(*) from {unmapped}) as unmapped,
    (select count(distinct key) + coalesce(bool_or(key is null)::int, 0) from {unmapped}) as unmapped_keys;

-- name: completeness_buckets
with scored as (
    select 'profile' as target, null::text as context_type, completeness from {profile}
    union all
    select 'context_intent' as target, context_type, completeness from {context_intent}
)
select
    target,
    context_type,
    grouping(context_type) = 1 as all_types,
    least(completeness / 10, 9) as bucket,
    count(*) as row_count
from scored
group by grouping sets ((target, bucket), (target, context_type, bucket))
having target = 'context_intent' or grouping(context_type) = 1;

-- name: completeness_stats
with scored as (
    select 'profile' as target, null::text as context_type, completeness from {profile}
    union all
    select 'context_intent' as target, context_type, completeness from {context_intent}
)
select
    target,
    context_type,
    grouping(context_type) = 1 as all_types,
    count(*) as row_count,
    round(avg(completeness), 1) as mean,
    count(*) filter (where completeness = 100) as complete
from scored
group by grouping sets ((target), (target, context_type))
having target = 'context_intent' or grouping(context_type) = 1
order by target desc, all_types desc, context_type collate "C";
