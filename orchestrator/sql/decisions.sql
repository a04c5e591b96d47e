-- The reviewers' decisions (spec §11): the statements orchestrator/decision_store.py runs, in named
-- sections ("-- name: ..."). It fills {decisions} (the metadata table), {conflicts} (the dry run's
-- migration_conflicts, or an empty relation of its columns when there is no dry run), {built} (the dry
-- run's migration_decisions: what its build read) and {scope} (a filter on user_id, or `true`) with
-- quoted identifiers and SQL; values are bound parameters.

-- name: template
-- the conflicts of the latest dry run as a reviewer fills them in: jsonb printed by the server, so
-- numbers keep their text (1.50 stays 1.50); %(field)s keeps a field, or an object field's sub-keys
select
    conflicts.user_id,
    conflicts.context_type,
    conflicts.field,
    conflicts."values"::text as "values",
    conflicts.chosen::text as chosen
from {conflicts} as conflicts
where
    (%(users)s::text[] is null or conflicts.user_id = any(%(users)s::text[]))
    and (
        %(field)s::text is null
        or conflicts.field = %(field)s::text
        or left(conflicts.field, length(%(field)s::text) + 1) = %(field)s::text || '.'
    )
order by conflicts.user_id collate "C", conflicts.context_type collate "C" nulls first, conflicts.field collate "C";

-- name: check
-- every deciding row of a file (pg_temp.decision_rows) against the latest dry run's conflicts: whether
-- its conflict exists, how many values it has, whether the decision's (and the `values` cell's) JSON
-- parses, and the value it names, as the conflict logged it (a position, or the value equal to the
-- decision's JSON under jsonb equality: a decided 1.00 names the logged 1.0)
with parsed as (
    select
        rows.*,
        case when rows.position is null then pg_temp.decision_jsonb(rows.decision) end as decided,
        case when rows.listed_values <> '' then pg_temp.decision_jsonb(rows.listed_values) end as listed
    from pg_temp.decision_rows as rows
)

select
    parsed.line,
    conflicts.user_id is not null as found,
    jsonb_array_length(conflicts."values") as value_count,
    conflicts."values"::text as conflict_values,
    parsed.position is null and parsed.decided is null as malformed,
    parsed.listed_values <> '' and parsed.listed is null as listed_malformed,
    parsed.listed is null or parsed.listed = conflicts."values" as listed_match,
    (case
        when parsed.position is not null then conflicts."values" -> (parsed.position - 1)
        else (
            select listed_value.value
            from jsonb_array_elements(conflicts."values") as listed_value
            where listed_value.value = parsed.decided
            limit 1
        )
    end)::text as value
from parsed
left join {conflicts} as conflicts
    on
        parsed.user_id = conflicts.user_id
        and parsed.field = conflicts.field
        and coalesce(parsed.context_type, '') = coalesce(conflicts.context_type, '')
order by parsed.line;

-- name: store
-- one decision: it replaces the conflict's earlier one, if any
insert into {decisions} (user_id, context_type, field, value, reviewer, decided_at, note, file_sha256)
values (%(user_id)s, %(context_type)s, %(field)s, %(value)s::jsonb, %(reviewer)s, now(), %(note)s, %(sha256)s)
on conflict (user_id, (coalesce(context_type, '')), field) do update
    set
        value = excluded.value,
        reviewer = excluded.reviewer,
        decided_at = excluded.decided_at,
        note = excluded.note,
        file_sha256 = excluded.file_sha256;

-- name: list
-- every decision, and what the latest dry run makes of it: `applied` (it chose the conflict's migrated
-- value), `pending` (valid, but made after the dry run: the next one applies it) or `stale` (its
-- conflict is gone, or its value is no longer among the conflict's values)
select
    decisions.user_id,
    decisions.context_type,
    decisions.field,
    decisions.value::text as value,
    decisions.reviewer,
    decisions.decided_at,
    decisions.note,
    decisions.file_sha256,
    case
        when conflicts.user_id is null then 'stale'
        when not exists (
            select from jsonb_array_elements(conflicts."values") as listed_value
            where listed_value.value = decisions.value
        ) then 'stale'
        when conflicts.decided_by = 'reviewer' and conflicts.chosen = decisions.value then 'applied'
        else 'pending'
    end as status,
    conflicts."values"::text as conflict_values
from {decisions} as decisions
left join {conflicts} as conflicts
    on
        decisions.user_id = conflicts.user_id
        and decisions.field = conflicts.field
        and coalesce(decisions.context_type, '') = coalesce(conflicts.context_type, '')
where {scope}
order by decisions.user_id collate "C", decisions.context_type collate "C" nulls first, decisions.field collate "C";

-- name: changed_since_build
-- the conflicts whose decision differs between the metadata table now and what the dry run's build
-- read (its migration_decisions): decided, re-decided or cleared since the dry run
with now_decided as (
    select user_id, coalesce(context_type, '') as context_type, field, value
    from {decisions} as decisions
    where {scope}
),

built as (
    select user_id, coalesce(context_type, '') as context_type, field, decided_value as value
    from {built} as built_decisions
    where {scope}
),

changed as (
    (select * from now_decided except select * from built)
    union all
    (select * from built except select * from now_decided)
)

select count(distinct (user_id, context_type, field)) from changed;
