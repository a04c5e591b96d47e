{#
    Fails (one row) when `model` and `compare_model` have different row counts
    (dbt_utils.equal_rowcount). Arguments: compare_model (a ref or source).
#}
{% test equal_rowcount(model, compare_model) %}
with counts as (
    select
        (select count(*) from {{ model }}) as model_rows,
        (select count(*) from {{ compare_model }}) as compare_model_rows
)

select * from counts
where model_rows <> compare_model_rows
{% endtest %}
