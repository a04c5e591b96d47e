{#
    Every node lands in exactly the target's schema: no `<target>_<custom>` suffixes. The one
    exception is a node that names its own schema (the fixture seeds), which lands in that schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
