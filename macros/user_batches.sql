{#
    Hash batches of users (`orchestrator dry-run --batches K`, docs/performance.md).

    Every intermediate model is local to a user: a user's rows depend only on that user's legacy rows.
    A batched dry run therefore builds the per-user chain (the `user_batched` models: three staging
    views and the intermediate models) once per batch, each over the users whose id hashes to it,
    into tables named `<model>__batch_<k>` in the dry-run schema, two batches at a time. The build
    that follows (var `batch_count` only) makes each intermediate table a view that appends its K
    batch tables, and builds the marts and runs every test over those views, exactly as it does
    over the one-batch tables. The output rows are the same, whatever K.

    vars: batch_count (K, default 1: no batches) and batch_index (0..K-1, set only while one
    batch's chain is built).
#}

{% macro batch_count() -%}
    {{ return(var('batch_count', 1) | int) }}
{%- endmacro %}

{% macro batch_index() -%}
    {%- set index = var('batch_index', none) -%}
    {{ return(none if index is none else index | int) }}
{%- endmacro %}

{#
    The batch of a user id: a hash of the id, modulo K. A NULL id (a Profile whose ContextProfile is
    missing) hashes as '' so its rows land in exactly one batch.
#}
{% macro user_batch_of(user_id) -%}
    mod(hashtext(coalesce({{ user_id }}, ''))::bigint + 2147483648, {{ batch_count() }})
{%- endmacro %}

{# A filter keeping the current batch's users while a batch is built; `true` otherwise. #}
{% macro in_current_batch(user_id) -%}
    {%- if batch_index() is none -%}
        true
    {%- else -%}
        {{ user_batch_of(user_id) }} = {{ batch_index() }}
    {%- endif -%}
{%- endmacro %}

{% macro batch_relation_name(name, index) -%}
    {{ return(name ~ '__batch_' ~ index) }}
{%- endmacro %}

{#
    While one batch is built, the `user_batched` models land in `<model>__batch_<k>`, so batches do
    not overwrite each other and the dry run's own relation names stay free for the union views.
#}
{% macro generate_alias_name(custom_alias_name=none, node=none) -%}
    {%- set alias = dbt.default__generate_alias_name(custom_alias_name, node) | trim -%}
    {%- if batch_index() is not none and node is not none and 'user_batched' in (node.config.tags or []) -%}
        {{ batch_relation_name(alias, batch_index()) }}
    {%- else -%}
        {{ alias }}
    {%- endif -%}
{%- endmacro %}
