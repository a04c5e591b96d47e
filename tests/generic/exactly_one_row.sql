{#
    Fails (one row) unless `model` holds exactly one row: the grain of a one-row model (figures
    counted over a whole relation). Under `dbt build --empty` dbt reads every relation, this one
    included, with `limit 0`: the test then expects the no row it can see.
#}
{% test exactly_one_row(model) %}
with counted as (
    select count(*) as row_count from {{ model }}
)

select * from counted
where row_count <> {{ 0 if model.limit == 0 else 1 }}
{% endtest %}
