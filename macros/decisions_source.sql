{#
    The reviewers' decisions as the staging model reads them (spec §11): source('review',
    'conflict_decisions'), in the orchestrator's execution modes like the legacy tables
    (macros/legacy_source.sql): a partial rebuild reads the decisions of the users in
    migration_meta.user_scope, a batch those of its users (macros/user_batches.sql).

    The table lives in the metadata schema, which the orchestrator creates (orchestrator/sql/metadata.sql)
    before every build. A plain `dbt build` on a database the orchestrator never touched has no such
    table: then the model reads an empty relation of the same columns and types, so the build works and
    migrates the first values (no decision). The source() call stays, so the lineage always shows it.
#}
{% macro decisions_source() -%}
    {%- set decisions = source('review', 'conflict_decisions') -%}
    {%- if execute and adapter.get_relation(
            database=decisions.database, schema=decisions.schema, identifier=decisions.identifier) is none -%}
        (
            select
                null::text as user_id,
                null::text as context_type,
                null::text as field,
                null::jsonb as value,
                null::text as reviewer,
                null::timestamptz as decided_at,
                null::text as note,
                null::text as file_sha256
            where false
        ) as no_decisions
    {%- elif var('user_scope', false) -%}
        (
            select decisions.*
            from (select * from {{ decisions }}) as decisions
            where decisions.user_id in (
                select scope.user_id from (select * from {{ source('migration_meta', 'user_scope') }}) as scope
            )
        ) as scoped_decisions
    {%- elif batch_index() is not none -%}
        (
            select decisions.*
            from (select * from {{ decisions }}) as decisions
            where {{ in_current_batch('decisions.user_id') }}
        ) as batch_decisions
    {%- else -%}
        {{ return(decisions) }}
    {%- endif -%}
{%- endmacro %}
