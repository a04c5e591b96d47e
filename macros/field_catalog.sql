{#
    The output columns of the two marts, in the order of the spec (§7) and of the required fields
    (§6). This is the one compile-time list of target fields: the marts' pivots are generated from
    it. The business rules stay data: which legacy keys feed a field is the `field_map` seed, which
    fields are required is the `required_fields` seed; `tests/singular/seed_checks/field_catalog_matches_seeds.sql`
    fails if this list and the seeds ever disagree.
#}
{% macro profile_fields() %}
    {{ return([
        {'field': 'coreValues', 'column': 'core_values', 'kind': 'array'},
        {'field': 'beliefs', 'column': 'beliefs', 'kind': 'object'},
        {'field': 'interactionStyle', 'column': 'interaction_style', 'kind': 'object'},
        {'field': 'lifestyle', 'column': 'lifestyle', 'kind': 'object'},
        {'field': 'constraints', 'column': 'constraints', 'kind': 'array'},
        {'field': 'location', 'column': 'location', 'kind': 'scalar'},
        {'field': 'ageRange', 'column': 'age_range', 'kind': 'scalar'},
        {'field': 'name', 'column': 'name', 'kind': 'scalar'},
    ]) }}
{% endmacro %}

{% macro intent_fields() %}
    {{ return([
        {'field': 'relationshipTimeline', 'column': 'relationship_timeline', 'kind': 'scalar', 'context_type': 'romantic'},
        {'field': 'exclusivityExpectation', 'column': 'exclusivity_expectation', 'kind': 'scalar', 'context_type': 'romantic'},
        {'field': 'familyIntentions', 'column': 'family_intentions', 'kind': 'scalar', 'context_type': 'romantic'},
        {'field': 'attractionImportance', 'column': 'attraction_importance', 'kind': 'scalar', 'context_type': 'romantic'},
        {'field': 'friendshipDepth', 'column': 'friendship_depth', 'kind': 'scalar', 'context_type': 'friendship'},
        {'field': 'groupActivityPreference', 'column': 'group_activity_preference', 'kind': 'scalar', 'context_type': 'friendship'},
        {'field': 'emotionalSupportExpectation', 'column': 'emotional_support_expectation', 'kind': 'scalar', 'context_type': 'friendship'},
        {'field': 'partnershipType', 'column': 'partnership_type', 'kind': 'scalar', 'context_type': 'professional'},
        {'field': 'commitmentHorizon', 'column': 'commitment_horizon', 'kind': 'scalar', 'context_type': 'professional'},
        {'field': 'complementarySkills', 'column': 'complementary_skills', 'kind': 'array', 'context_type': 'professional'},
        {'field': 'equityOrRevShare', 'column': 'equity_or_rev_share', 'kind': 'scalar', 'context_type': 'professional'},
        {'field': 'creativeType', 'column': 'creative_type', 'kind': 'scalar', 'context_type': 'creative'},
        {'field': 'roleNeeded', 'column': 'role_needed', 'kind': 'scalar', 'context_type': 'creative'},
        {'field': 'processStyle', 'column': 'process_style', 'kind': 'scalar', 'context_type': 'creative'},
        {'field': 'egoBalance', 'column': 'ego_balance', 'kind': 'scalar', 'context_type': 'creative'},
        {'field': 'compensationExpectation', 'column': 'compensation_expectation', 'kind': 'scalar', 'context_type': 'creative'},
        {'field': 'serviceType', 'column': 'service_type', 'kind': 'scalar', 'context_type': 'service'},
        {'field': 'budgetRange', 'column': 'budget_range', 'kind': 'scalar', 'context_type': 'service'},
        {'field': 'timelineNeeded', 'column': 'timeline_needed', 'kind': 'scalar', 'context_type': 'service'},
        {'field': 'credentialsRequired', 'column': 'credentials_required', 'kind': 'scalar', 'context_type': 'service'},
    ]) }}
{% endmacro %}

{#
    One output column from a row's merged fields (a jsonb object: field name -> merged value):
    scalars as text, arrays/objects as jsonb with the spec's empty default (`[]`/`{}`) unless
    `empty_as_null` (the intent's `complementary_skills` is NULL when absent).
#}
{% macro pivot_field(fields_column, spec, empty_as_null=false) -%}
    {%- if spec.kind == 'scalar' -%}
        {{ fields_column }} ->> '{{ spec.field }}'
    {%- elif empty_as_null -%}
        {{ fields_column }} -> '{{ spec.field }}'
    {%- else -%}
        coalesce({{ fields_column }} -> '{{ spec.field }}', '{{ "[]" if spec.kind == "array" else "{}" }}'::jsonb)
    {%- endif -%}
{%- endmacro %}
