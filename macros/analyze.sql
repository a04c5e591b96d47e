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
