-- One row per context profile id that legacy chat messages name: the chat-message figures of the
-- verification (spec §8: every message of a migrated context profile maps to exactly one intent),
-- counted for the messages naming that id. migration_counts sums the rows.
--
-- Kept per context profile, not per owner: the application writes chat messages all the time, and a
-- message changes none of its user's migrated rows, so it makes no owner to rebuild. A sync round or
-- catch-up instead brings up to date only the rows of the context profiles it was told of
-- (migration_meta.context_profile_scope: those of the messages, context profiles and users the copy of
-- the legacy rows changed), by dbt's delete+insert on context_profile_id (var counts_by_difference:
-- orchestrator/dry_run.py). Every such id gets a row, all zeros when no message names it any more, so
-- the delete+insert replaces what the table held; the post-hook then removes the rows of zeros (no id
-- is kept of messages or context profiles that are gone). A full dry run builds the table whole.
{{ config(
    materialized='incremental' if var('counts_by_difference', false) else 'table',
    incremental_strategy='delete+insert',
    unique_key='context_profile_id',
    indexes=[{'columns': ['context_profile_id'], 'unique': true}],
    post_hook=(
        "{% if is_incremental() %}delete from {{ this }} where chat_messages = 0 and context_profile_id in"
        " (select context_profile_id from {{ source('migration_meta', 'context_profile_scope') }})"
        "{% else %}select 'nothing to remove: built whole'{% endif %}"
    ),
) }}

with chat_messages as (
    select * from {{ ref('stg_legacy__chat_messages') }}
),

context_profiles as (
    select * from {{ ref('stg_legacy__context_profiles') }}
),

users as (
    select * from {{ ref('stg_legacy__users') }}
),

context_intents as (
    select * from {{ ref('context_intent') }}
),

{% if is_incremental() %}
-- the context profiles to count again (NULL marks "all": the orchestrator rebuilds the table whole then)
    scope as (
        select distinct context_profile_id
        from {{ source('migration_meta', 'context_profile_scope') }}
        where context_profile_id is not null
    ),

    messages_per_context_profile as (
        select
            scope.context_profile_id,
            count(chat_messages.chat_message_id) as chat_messages
        from scope
        left join chat_messages
            on scope.context_profile_id = chat_messages.context_profile_id
        group by scope.context_profile_id
    ),
{% else %}
    messages_per_context_profile as (
        select
            context_profile_id,
            count(*) as chat_messages
        from chat_messages
        group by context_profile_id
    ),
{% endif %}

-- context_intent has a unique index on (user_id, context_type): at most one intent per context profile
linked as (
    select
        messages_per_context_profile.context_profile_id,
        messages_per_context_profile.chat_messages,
        context_profiles.context_profile_id is not null as has_context_profile,
        users.user_id is not null as is_migrated,
        context_intents.id is not null as has_intent
    from messages_per_context_profile
    left join context_profiles
        on messages_per_context_profile.context_profile_id = context_profiles.context_profile_id
    left join users
        on context_profiles.user_id = users.user_id
    left join context_intents
        on
            users.user_id = context_intents.user_id
            and context_profiles.context_type = context_intents.context_type
),

counts as (
    select
        context_profile_id,
        chat_messages::bigint as chat_messages,
        case when is_migrated then chat_messages else 0 end::bigint as chat_messages_of_migrated_context_profiles,
        case when is_migrated and has_intent then chat_messages else 0 end::bigint
            as chat_messages_mapped_to_one_intent,
        case when has_context_profile and not is_migrated then chat_messages else 0 end::bigint
            as chat_messages_of_orphan_context_profiles,
        case when has_context_profile then 0 else chat_messages end::bigint as chat_messages_without_context_profile
    from linked
)

select * from counts
