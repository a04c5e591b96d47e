{#
    Fails on every row whose `column_name` is NULL or outside [min_value, max_value]
    (dbt_utils.accepted_range, inclusive). Arguments: min_value, max_value (either may be omitted:
    comparing the column with itself is then never true).
#}
{% test accepted_range(model, column_name, min_value=none, max_value=none) %}
select *
from {{ model }}
where
    {{ column_name }} is null
    or {{ column_name }} < {{ min_value if min_value is not none else column_name }}
    or {{ column_name }} > {{ max_value if max_value is not none else column_name }}
{% endtest %}
