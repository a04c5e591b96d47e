{#
    Fails on every row where `expression` is not true (dbt_utils.expression_is_true).
    Arguments: expression (SQL over the model's columns).
#}
{% test expression_is_true(model, expression, column_name=none) %}
select *
from {{ model }}
where not coalesce(({{ expression }}), false)
{% endtest %}
