{#
    Fails on every combination of `combination_of_columns` that appears more than once
    (dbt_utils.unique_combination_of_columns; the dbt hub is unreachable here).
    Arguments: combination_of_columns (list of column names).
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
with duplicates as (
    select
        {{ combination_of_columns | join(', ') }},
        count(*) as occurrences
    from {{ model }}
    group by {{ combination_of_columns | join(', ') }}
    having count(*) > 1
)

select * from duplicates
{% endtest %}
