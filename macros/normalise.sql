{#
    Spec §3 for one JSON scalar: the text it migrates as, or NULL when absent.
    - a string is trimmed of space, tab, newline, carriage return, form feed and vertical tab
      (E'\x0B': in PostgreSQL E'\v' is just the letter v); empty after trimming is absent;
    - a number or boolean becomes its JSON text exactly as jsonb prints it (1.50 -> '1.50');
    - JSON null, objects and arrays give NULL (callers classify objects/arrays as type_mismatch
      before calling this).
    Argument: `value`, a jsonb expression.
#}
{% macro normalise_scalar(value) -%}
    case jsonb_typeof({{ value }})
        when 'string' then nullif(btrim({{ value }} #>> '{}', E' \t\n\r\f\x0B'), '')
        when 'number' then {{ value }}::text
        when 'boolean' then {{ value }}::text
    end
{%- endmacro %}

{#
    Whether a legacy value cannot go to a target of `kind` (spec §3, type_mismatch). JSON null is
    never a mismatch (it is absent).
    - scalar: an object or an array;
    - array: an object, or an array holding an object or an array;
    - object: anything but an object.
#}
{% macro is_type_mismatch(value, kind) -%}
    case
        when jsonb_typeof({{ value }}) = 'null' then false
        when {{ kind }} = 'scalar' then jsonb_typeof({{ value }}) in ('object', 'array')
        when {{ kind }} = 'array' then
            jsonb_typeof({{ value }}) = 'object'
            or (jsonb_typeof({{ value }}) = 'array' and jsonb_path_exists({{ value }}, 'strict $[*] ? (@.type() == "object" || @.type() == "array")'))
        when {{ kind }} = 'object' then jsonb_typeof({{ value }}) <> 'object'
    end
{%- endmacro %}

{#
    The order in which a user's values are taken (spec §4), as one bigint: the legacy profile's
    position in context order, then the field map priority of the key (aliases), then the position
    inside an array. Limits, checked by tests: context order < 2^20, priority < 2^12, array
    position < 2^31.
#}
{% macro atom_sort_key(context_order, priority, position) -%}
    (({{ context_order }})::bigint << 43) | (({{ priority }})::bigint << 31) | ({{ position }})::bigint
{%- endmacro %}

{#
    Spec §6: round(100 * filled / required), half away from zero (numeric round does exactly
    that), an integer 0-100. A target with no required fields counts as complete.
#}
{% macro completeness_score(filled, required) -%}
    case when ({{ required }}) = 0 then 100
         else round(100 * ({{ filled }})::numeric / ({{ required }}))::integer end
{%- endmacro %}

{#
    The deterministic ids (docs/decisions.md): md5 of the natural key, shaped as a uuid.
#}
{% macro profile_id(user_id) -%}
    md5('UserProfile/' || {{ user_id }})::uuid::text
{%- endmacro %}

{% macro context_intent_id(user_id, context_type) -%}
    md5('ContextIntent/' || {{ user_id }} || '/' || {{ context_type }})::uuid::text
{%- endmacro %}
