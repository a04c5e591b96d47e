{#- In its own macro path (dbt_project.yml): sqlfluff's jinja templater, which loads macros/, knows no
    `materialization` tag. Hash batches of users: macros/user_batches.sql. -#}
{#
    The materialization of an intermediate table in a batched dry run's main build: a view that
    appends the K batch tables the batch builds made (the model's own SQL is not run again). Refuses
    to run when a batch table is missing: batches are built by `orchestrator dry-run --batches K`.
#}
{% materialization user_batch_union, adapter='postgres' %}
    {%- set target_relation = this.incorporate(type='view') -%}
    {%- set existing_relation = load_cached_relation(this) -%}
    {%- set parts = [] -%}
    {%- for index in range(batch_count()) -%}
        {%- set part = adapter.get_relation(
            database=this.database, schema=this.schema,
            identifier=batch_relation_name(this.identifier, index)) -%}
        {%- if part is none -%}
            {{ exceptions.raise_compiler_error(
                "batch table " ~ batch_relation_name(this.identifier, index) ~ " of " ~ this.identifier
                ~ " is missing in schema " ~ this.schema ~ ": batched dry runs are built by "
                ~ "`orchestrator dry-run --batches " ~ batch_count() ~ "`, not by dbt alone") }}
        {%- endif -%}
        {%- do parts.append(part) -%}
    {%- endfor -%}

    {{ run_hooks(pre_hooks, inside_transaction=False) }}
    {{ run_hooks(pre_hooks, inside_transaction=True) }}

    {%- if existing_relation is not none -%}
        {{ adapter.drop_relation(existing_relation) }}
    {%- endif -%}
    {% call statement('main') -%}
        create view {{ target_relation }} as
        {% for part in parts -%}
            select * from {{ part }}
            {% if not loop.last %}union all{% endif %}
        {% endfor %}
    {%- endcall %}

    {% do persist_docs(target_relation, model) %}
    {{ run_hooks(post_hooks, inside_transaction=True) }}
    {{ adapter.commit() }}
    {{ run_hooks(post_hooks, inside_transaction=False) }}
    {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
