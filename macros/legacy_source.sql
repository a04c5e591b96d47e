{#
    A legacy table as the staging models read it: the one place that knows the orchestrator's
    execution modes, so that each staging model reads as `source` -> `renamed`.

    Every orchestrated run reads the legacy tables through the copy its snapshot made of them, as of one
    moment (orchestrator/snapshot.py): the source's schema follows the var `legacy_snapshot_schema`
    (models/staging/legacy/_legacy__sources.yml). The copy has the legacy tables' names and columns, so
    nothing below depends on which of the two a run reads.

    - A full dry run (no vars): the plain source() relation, so each staging model's lineage shows
      exactly its one legacy table.
    - A partial rebuild (var `user_scope`: `orchestrator promote --user ...`, and the catch-up of
      `promote --catch-up` and `sync`): the rows of the users listed in migration_meta.user_scope, and
      the orphan Profiles listed in migration_meta.profile_scope (they belong to no user).
    - One batch of a batched dry run (var `batch_index`, macros/user_batches.sql): the rows of the
      batch's users. Not "ChatMessage": it is not a `user_batched` model, since only the main build
      reads the messages (the verification counts).

    A "User" or "ContextProfile" row names its user (`user_column`); a "Profile" or "ChatMessage" row
    belongs to the user of its ContextProfile. In a batch, a Profile whose ContextProfile is missing
    has no user and hashes as '' (user_batch_of), so it lands in exactly one batch.

    Each shape below is the tuned filter (docs/performance.md): a semi-join on the scope, and for a
    batch's Profiles a left join to "ContextProfile" and the hash. Every relation is read through
    `(select * from ...)`: under `dbt build --empty` dbt renders a source as a subquery with its own
    alias, which cannot take ours; PostgreSQL flattens the subquery, so the plan is the same.
#}
{% macro legacy_source(table_name) -%}
    {%- set user_column = {'User': 'id', 'ContextProfile': 'userId'}.get(table_name) -%}
    {%- set scope = var('user_scope', false) -%}
    {%- set batch = batch_index() is not none and table_name != 'ChatMessage' -%}
    {%- if scope and user_column is not none -%}
        (
            select legacy.*
            from (select * from {{ source('legacy', table_name) }}) as legacy
            where legacy."{{ user_column }}" in (
                select scope.user_id from (select * from {{ source('migration_meta', 'user_scope') }}) as scope
            )
        ) as scoped_legacy
    {%- elif scope -%}
        {#- a Profile or ChatMessage of a scope user's ContextProfile; for "Profile", also an orphan the
            scope lists. Two branches, not an OR: each reaches its rows through an index of the copy
            ("contextProfileId"; "id"), where an OR of the two scanned the table -#}
        {%- set scope_context_profiles -%}
            select context_profiles."id"
            from (select * from {{ source('legacy', 'ContextProfile') }}) as context_profiles
            inner join (select * from {{ source('migration_meta', 'user_scope') }}) as scope
                on context_profiles."userId" = scope.user_id
        {%- endset -%}
        (
            select legacy.*
            from (select * from {{ source('legacy', table_name) }}) as legacy
            where legacy."contextProfileId" in ({{ scope_context_profiles }})
            {%- if table_name == 'Profile' %}
            union all
            select legacy.*
            from (select * from {{ source('legacy', table_name) }}) as legacy
            where
                legacy."id" in (
                    select orphans.legacy_profile_id
                    from (select * from {{ source('migration_meta', 'profile_scope') }}) as orphans
                )
                and legacy."contextProfileId" not in ({{ scope_context_profiles }})
            {%- endif %}
        ) as scoped_legacy
    {%- elif batch and user_column is not none -%}
        (
            select legacy.*
            from (select * from {{ source('legacy', table_name) }}) as legacy
            where {{ in_current_batch('legacy."' ~ user_column ~ '"') }}
        ) as batch_legacy
    {%- elif batch -%}
        (
            select legacy.*
            from (select * from {{ source('legacy', table_name) }}) as legacy
            left join (select * from {{ source('legacy', 'ContextProfile') }}) as context_profiles
                on legacy."contextProfileId" = context_profiles."id"
            where {{ in_current_batch('context_profiles."userId"') }}
        ) as batch_legacy
    {%- else -%}
        {{ return(source('legacy', table_name)) }}
    {%- endif -%}
{%- endmacro %}
