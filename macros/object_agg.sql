{#- jsonb_object_agg that refuses a key twice in one group: jsonb_object_agg_unique from PostgreSQL 16 on
    (the statement fails, naming the key); before, jsonb_object_agg, which would keep one of the two values
    (the field map's seed check field_map_one_kind_per_field is what rules that out there). -#}
{% macro jsonb_object_agg_refusing_twice(key, value) -%}
    {%- set version = run_query('show server_version_num').columns[0].values()[0] | int if execute else 0 -%}
    {%- if version >= 160000 -%}
        jsonb_object_agg_unique({{ key }}, {{ value }})
    {%- else -%}
        jsonb_object_agg({{ key }}, {{ value }})
    {%- endif -%}
{%- endmacro %}
