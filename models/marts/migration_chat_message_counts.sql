-- One row per context profile id that legacy chat messages name: the chat-message figures of the
-- verification (spec §8: every message of a migrated context profile maps to exactly one intent),
-- counted for the messages naming that id. migration_counts sums the rows.
--
-- Kept per context profile, not per owner: the application writes chat messages all the time, and a
-- message changes none of its user's migrated rows, so it makes no owner to rebuild. A sync round or
-- catch-up instead brings up to date only the rows of the context profiles it was told of
-- (migration_meta.context_profile_scope: those of the messages, context profiles and users the copy of
-- the legacy rows changed; var counts_by_difference: orchestrator/dry_run.py): the pre-hook deletes
-- their rows, and the model appends them counted again (none for an id no message names any more). A
-- full dry run builds the table whole.
-- Unlogged: derived from the marts and the copy, rebuilt by every dry run, and no WAL for the change stream
-- to decode in the next round. A crash empties it: a catch-up then refuses (orchestrator/dry_run.py).
{{ config(
    materialized='incremental' if var('counts_by_difference', false) else 'table',
    incremental_strategy='append',
    indexes=[{'columns': ['context_profile_id'], 'unique': true}],
    unlogged=true,
    pre_hook=(
        "{% if is_incremental() %}delete from {{ this }} where context_profile_id in"
        " (select context_profile_id from {{ source('migration_meta', 'context_profile_scope') }})"
        "{% else %}select 'nothing to remove: built whole'{% endif %}"
    ),
) }}

{% if is_incremental() %}
    -- the context profiles to count again, as one array: `= any(...)` of it reaches through the staging
    -- views into the copy's indexes, where a join with the views would scan them
    with scope as (
        select coalesce(array_agg(distinct context_profile_id), '{}') as context_profile_ids
        from {{ source('migration_meta', 'context_profile_scope') }}
        where context_profile_id is not null
    ),

    chat_messages as (
        select * from {{ ref('stg_legacy__chat_messages') }}
        where context_profile_id = any((select scope.context_profile_ids from scope)::text[])
    ),

    context_profiles as (
        select * from {{ ref('stg_legacy__context_profiles') }}
        where context_profile_id = any((select scope.context_profile_ids from scope)::text[])
    ),

    users as (
        select * from {{ ref('stg_legacy__users') }}
        where user_id = any(array(select context_profiles.user_id from context_profiles))
    ),
{% else %}
    with chat_messages as (
        select * from {{ ref('stg_legacy__chat_messages') }}
    ),

    context_profiles as (
        select * from {{ ref('stg_legacy__context_profiles') }}
    ),

    users as (
        select * from {{ ref('stg_legacy__users') }}
    ),
{% endif %}

context_intents as (
    select * from {{ ref('context_intent') }}
),

-- what decides a message's figures: its context profile exists, its user exists, and the (user,
-- context type) has its intent (context_intent has a unique index on (user_id, context_type): at most
-- one intent per context profile)
context_profile_status as (
    select
        context_profiles.context_profile_id,
        users.user_id is not null as is_migrated,
        context_intents.id is not null as has_intent
    from context_profiles
    left join users
        on context_profiles.user_id = users.user_id
    left join context_intents
        on
            users.user_id = context_intents.user_id
            and context_profiles.context_type = context_intents.context_type
),

-- one parallel hash join of the messages with their context profile's status, grouped by the id they name
counted as (
    select
        chat_messages.context_profile_id,
        count(*) as chat_messages,
        count(*) filter (where status.is_migrated) as chat_messages_of_migrated_context_profiles,
        count(*) filter (where status.is_migrated and status.has_intent) as chat_messages_mapped_to_one_intent,
        count(*) filter (where not status.is_migrated) as chat_messages_of_orphan_context_profiles,
        count(*) filter (where status.context_profile_id is null) as chat_messages_without_context_profile
    from chat_messages
    left join context_profile_status as status
        on chat_messages.context_profile_id = status.context_profile_id
    group by chat_messages.context_profile_id
)

select * from counted
