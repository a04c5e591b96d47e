{#
    Post-hook of every model (dbt_project.yml): refresh the planner's statistics of a table the model
    just built. A new table has none until autovacuum gets to it, and the next model is planned at
    once: without them PostgreSQL guessed 40,000 groups for 3M (user, context type) rows at 1M
    users and picked a plan that aggregated everything three times over. ANALYZE samples a fixed
    number of rows, so it costs well under a second at any size. Views are skipped.
#}
{% macro analyze_if_table() -%}
    {%- if config.get('materialized') in ('table', 'incremental') -%}
        analyze {{ this }}
    {%- endif -%}
{%- endmacro %}

{#
    Post-hook of every model too (dbt_project.yml): no vacuum of a table just built because rows were
    inserted. Every table of a dry run is written in bulk once and read at once by the next model; from
    PostgreSQL 13 on autovacuum vacuums a table after enough inserts, reading every page to set visibility
    bits nothing here needs. In one dry run of 1M users (344 s, two cores) its workers had spent 285 s in
    vacuums of the dry run's tables by the middle of the batches and 535 s by the end, and 147 s in vacuums
    of the copy of the legacy rows (their cost-based sleeps included). Vacuums after deletes (a
    catch-up's splice, a round's incremental counts) and the anti-wraparound ones stay as the server has
    them. Not in a partial rebuild (var user_scope): its tables hold a few users, and one statement more
    per table is a cost every sync round would pay.
#}
{% macro no_insert_vacuum() -%}
    {%- if config.get('materialized') in ('table', 'incremental') and not var('user_scope', false) -%}
        alter table {{ this }} set (autovacuum_vacuum_insert_threshold = -1)
    {%- endif -%}
{%- endmacro %}
