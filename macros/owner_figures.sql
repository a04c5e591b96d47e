{#
    The figures of migration_counts_by_owner, in its column order: one branch of its union names the
    figures its relation gives (`owner_figures(users='1')`), and every other figure is 0 in that branch.
    migration_counts sums each column (and migration_counts_by_owner derives the figures that need
    two relations: profile_users, context_profiles_migrated, orphan_context_profiles,
    users_with_conflicts).
#}
{% macro owner_figure_names() -%}
    {{ return([
        'users', 'profiles', 'profile_completeness_out_of_range', 'context_intents',
        'intent_completeness_out_of_range', 'intent_pairs', 'context_profiles',
        'legacy_profiles', 'legacy_profiles_migrated', 'legacy_profiles_of_orphan_context_profiles',
        'orphan_legacy_profiles', 'object_blobs', 'null_blobs', 'non_object_blobs', 'keys_seen',
        'keys_mapped', 'keys_unmapped', 'non_object_blob_rows', 'conflicts', 'conflicts_decided',
        'decisions_stale',
    ]) }}
{%- endmacro %}

{% macro owner_figures() -%}
    {%- for figure in owner_figure_names() %}
        {{ kwargs.get(figure, '0') }} as {{ figure }}{{ "," if not loop.last }}
    {%- endfor %}
    {%- for given in kwargs if given not in owner_figure_names() %}
        {{ exceptions.raise_compiler_error("owner_figures: no figure named " ~ given) }}
    {%- endfor %}
{%- endmacro %}
