-- Synthetic legacy data for `orchestrator generate` (orchestrator/generate.py runs this file).
--
-- Every value is a pure function of (seed, row number): pg_temp.gen_r(i, salt) hashes the integer
-- i with hashint8extended under a seed derived from the run's seed and a salt, so the same seed
-- gives byte-identical rows whatever the chunking, the worker count or the server version.
--
-- Numbering (no joins anywhere; every table is computed from the user number u alone):
--   user u = 1..N; "phantom" users u = N+1..N+P never get a "User" row: their context profiles
--   are the orphan context profiles (userId matches no user);
--   context profile slot j = 1..4 (distinct types), 5 = a duplicate (same user and type);
--   context profile number cpn = u*8 + j; slot 6 = dangling chat messages, slot 7 = orphan
--   Profiles (a contextProfileId that matches no context profile);
--   legacy Profile number pn = cpn*4 + k (k = 0, 1: a second Profile for the same context profile);
--   chat message number = cpn*16 + m.
--
-- The file is split into named sections ("-- name: ..."); generate.py substitutes {seed} and
-- {users} (integers, as literals) in the prelude and binds %(lo)s / %(hi)s (a range of u) in the
-- loads. No other braces and no percent sign appear in the SQL below.

-- name: prelude
create function pg_temp.gen_r(i bigint, salt bigint) returns double precision
language sql immutable parallel safe as $$
    select (hashint8extended(i, {seed}::bigint * 1000003 + salt) & 4294967295) / 4294967296.0
$$;

create function pg_temp.gen_hex(i bigint, salt bigint) returns text
language sql immutable parallel safe as $$
    select lpad(to_hex(hashint8extended(i, {seed}::bigint * 1000003 + salt) & 4294967295), 8, '0')
$$;

-- cuid-like ids ('c' + 24 lowercase hex): random-looking, unique by construction (the number is inside)
create function pg_temp.gen_id(kind bigint, i bigint) returns text
language sql immutable parallel safe as $$
    select 'c' || pg_temp.gen_hex(i, kind) || lpad(to_hex(i), 8, '0') || pg_temp.gen_hex(i, kind + 1)
$$;

create function pg_temp.users() returns bigint
language sql immutable parallel safe as $$ select {users}::bigint $$;

-- the "userId" of user u's context profiles: a phantom's is the id of a deleted user, or a near miss
-- of a real user's id (upper case, a trailing space), which matches no "User"."id" byte for byte
create function pg_temp.user_ref(u bigint) returns text
language sql immutable parallel safe as $$
    select case
        when u <= pg_temp.users() then pg_temp.gen_id(100, u)
        when pg_temp.gen_r(u, 16) < 0.5 then pg_temp.gen_id(100, u)
        when pg_temp.gen_r(u, 16) < 0.75 then upper(pg_temp.gen_id(100, u - pg_temp.users()))
        else pg_temp.gen_id(100, u - pg_temp.users()) || ' '
    end
$$;

-- how many distinct-type context profiles user u has (0 for ~10% of real users; phantoms always >= 1)
create function pg_temp.cp_count(u bigint) returns integer
language sql immutable parallel safe as $$
    select case
        when u <= pg_temp.users() and pg_temp.gen_r(u, 1) < 0.10 then 0
        else 1 + floor(pg_temp.gen_r(u, 2) * 4)::integer
    end
$$;

-- whether slot j of user u is a context profile (slot 5: a duplicate, ~1% of context profiles)
create function pg_temp.cp_exists(u bigint, j integer) returns boolean
language sql immutable parallel safe as $$
    select case
        when j <= 4 then j <= pg_temp.cp_count(u)
        when j = 5 then pg_temp.cp_count(u) > 0 and pg_temp.gen_r(u, 5) < 0.025
        else false
    end
$$;

-- the context type of slot j, 0..4 in enum order: slots 1..4 distinct; slot 5 repeats one of them
create function pg_temp.cp_type(u bigint, j integer) returns integer
language sql immutable parallel safe as $$
    select mod(
        floor(pg_temp.gen_r(u, 3) * 5)::integer
        + (case when j = 5 then floor(pg_temp.gen_r(u, 6) * greatest(pg_temp.cp_count(u), 1))::integer
                else j - 1 end)
        * (1 + floor(pg_temp.gen_r(u, 4) * 4)::integer),
        5)
$$;

create function pg_temp.type_name(t integer) returns text
language sql immutable parallel safe as $$
    select (array['romantic', 'friendship', 'professional', 'creative', 'service'])[t + 1]
$$;

create function pg_temp.user_created(u bigint) returns timestamp
language sql immutable parallel safe as $$
    select timestamp '2023-01-01 00:00:00' + pg_temp.gen_r(u, 10) * interval '600 days'
$$;

-- ~3% of context profiles start at the user's creation instant: ties, ordered by id (spec §4)
create function pg_temp.cp_created(u bigint, j integer) returns timestamp
language sql immutable parallel safe as $$
    select pg_temp.user_created(u) + case
        when pg_temp.gen_r(u * 8 + j, 20) < 0.03 then interval '0'
        else pg_temp.gen_r(u * 8 + j, 21) * interval '120 days'
    end
$$;

-- name: users
insert into "User" ("id", "email", "name", "createdAt", "updatedAt")
select
    pg_temp.gen_id(100, u),
    case when pg_temp.gen_r(u, 11) < 0.97 then 'user' || u || '@example.com' end,
    case when pg_temp.gen_r(u, 12) < 0.9 then
        (array['Ada', 'Ben', 'Chloe', 'Dev', 'Eli', 'Fatima', 'Gus', 'Hana', 'Ivan', 'Jo',
               'Kemal', 'Lea', 'Mateo', 'Nia', 'Omar', 'Priya', 'Quinn', 'Rosa', 'Sami', 'Tomas',
               'Uma', 'Vik', 'Wen', 'Xavi', 'Yara', 'Zoe'])[1 + floor(pg_temp.gen_r(u, 13) * 26)::integer]
        || ' '
        || (array['Smith', 'Garcia', 'Kim', 'Okafor', 'Rossi', 'Nguyen', 'Haddad', 'Novak', 'Silva',
                  'Berg', 'Sato', 'Walker', 'Ivanova', 'Mensah', 'Costa', 'Larsen'])[1 + floor(pg_temp.gen_r(u, 14) * 16)::integer]
    end,
    pg_temp.user_created(u),
    pg_temp.user_created(u) + pg_temp.gen_r(u, 15) * interval '200 days'
from generate_series(%(lo)s::bigint, least(%(hi)s::bigint, pg_temp.users())) as u;

-- name: context_profiles
insert into "ContextProfile" ("id", "userId", "contextType", "tonePreference", "createdAt", "updatedAt")
select
    pg_temp.gen_id(200, u * 8 + j),
    pg_temp.user_ref(u),
    pg_temp.type_name(pg_temp.cp_type(u, j))::"RelationshipContextType",
    (array['warm', 'direct', 'playful', 'formal', 'gentle'])[1 + floor(pg_temp.gen_r(u * 8 + j, 22) * 6)::integer],
    pg_temp.cp_created(u, j),
    pg_temp.cp_created(u, j) + pg_temp.gen_r(u * 8 + j, 23) * interval '90 days'
from generate_series(%(lo)s::bigint, %(hi)s::bigint) as u
cross join lateral generate_series(1, 5) as j
where pg_temp.cp_exists(u, j);

-- name: profiles
with slots as (
    -- every legacy Profile: u, its context profile slot j, k, and the numbers derived from them
    select
        u,
        j,
        k,
        u * 8 + j as cpn,
        (u * 8 + j) * 4 + k as pn,
        case when j = 7 then floor(pg_temp.gen_r(u, 8) * 5)::integer else pg_temp.cp_type(u, j) end as t,
        case when j = 7 then pg_temp.user_created(u) else pg_temp.cp_created(u, j) end as cp_created,
        -- intent values are the same in every Profile of a (user, type), except that ~20% of
        -- duplicate context profiles disagree
        case when j = 5 and pg_temp.gen_r(u, 9) < 0.2 then u * 8 + 5 else u * 8 end as intent_key,
        -- ~7% of users hold different locations in different contexts: ~4% of all users end up with
        -- a location conflict, ~4.5% with a conflict of any kind (under the default 5% gate)
        pg_temp.gen_r(u, 60) < 0.07 as location_varies,
        -- ~0.3% of users hold different beliefs in different contexts
        pg_temp.gen_r(u, 61) < 0.003 as beliefs_vary
    from generate_series(%(lo)s::bigint, %(hi)s::bigint) as u
    cross join lateral generate_series(1, 7) as j
    cross join lateral generate_series(0, 1) as k
    where case
        when j <= 5 then pg_temp.cp_exists(u, j)
            and pg_temp.gen_r(u * 8 + j, 30) >= case k when 0 then 0.06 else 0.99 end
        when j = 7 then k = 0 and pg_temp.gen_r(u, 7) < 0.021
        else false
    end
),

catalog (pos, key, ctx, kind, pool) as (
    -- the §2 field map: ctx 0 = shared, else 1 + the context type; pools of realistic values
    values
    (1, 'coreValues', 0, 'array', array[
        'honesty', 'kindness', 'curiosity', 'loyalty', 'ambition', 'humor', 'family', 'growth',
        'adventure', 'faith', 'independence', 'creativity', 'respect', 'balance', 'generosity',
        'patience', 'courage', 'empathy', 'learning', 'health', 'community', 'freedom', 'stability',
        'tradition', 'openness', 'discipline', 'playfulness', 'integrity', 'gratitude', 'justice']),
    (2, 'constraints', 0, 'array', array[
        'no smoking', 'within 30 km', 'weekends only', 'remote only', 'no long distance',
        'vegetarian', 'non-drinker', 'evenings', 'same city', 'pet friendly', 'english speaking',
        'part time', 'no travel', 'budget conscious', 'quiet places', 'daytime', 'online first',
        'kids welcome', 'accessible venues', 'flexible hours']),
    (3, 'beliefs', 0, 'object', array['religion', 'politics', 'spirituality', 'astrology']),
    (4, 'interactionStyle', 0, 'object', array['communication', 'conflict', 'humor', 'pace']),
    (5, 'lifestyle', 0, 'object', array['diet', 'exercisePerWeek', 'smoking', 'drinking', 'pets']),
    (6, 'location', 0, 'scalar', array[
        'San Francisco', 'New York', 'Oslo', 'Berlin', 'Lisbon', 'Lagos', 'Nairobi', 'Seoul',
        'Tokyo', 'Mumbai', 'Sao Paulo', 'Mexico City', 'Toronto', 'Sydney', 'Paris', 'Madrid',
        'Cairo', 'Istanbul', 'Warsaw', 'Dublin', 'Austin', 'Chicago', 'Seattle', 'Denver',
        'Montreal', 'Cape Town', 'Accra', 'Manila', 'Jakarta', 'Bangkok', 'Hanoi', 'Lima',
        'Bogota', 'Santiago', 'Helsinki', 'Copenhagen', 'Vienna', 'Prague', 'Athens', 'Rome']),
    (7, 'ageRange', 0, 'scalar', array['18-24', '25-34', '35-44', '45-54', '55-64', '65+']),
    (8, 'name', 0, 'scalar', array[
        'Ada', 'Ben', 'Chloe', 'Dev', 'Eli', 'Fatima', 'Gus', 'Hana', 'Ivan', 'Jo', 'Kemal', 'Lea',
        'Mateo', 'Nia', 'Omar', 'Priya', 'Quinn', 'Rosa', 'Sami', 'Tomas', 'Uma', 'Vik', 'Wen']),
    (9, 'relationshipTimeline', 1, 'scalar', array['taking_my_time', 'open_to_soon', 'actively_looking']),
    (10, 'exclusivityExpectation', 1, 'scalar', array['monogamous', 'open', 'figuring_it_out']),
    (11, 'familyIntentions', 1, 'scalar', array['want_kids', 'dont_want_kids', 'open', 'already_have']),
    (12, 'attractionImportance', 1, 'scalar', array['critical', 'important', 'balanced', 'less_important']),
    (13, 'friendshipDepth', 2, 'scalar', array['casual', 'close', 'best_friend']),
    (14, 'groupActivityPreference', 2, 'scalar', array['one_on_one', 'small_group', 'large_group', 'flexible']),
    (15, 'emotionalSupportExpectation', 2, 'scalar', array['minimal', 'moderate', 'high']),
    (16, 'partnershipType', 3, 'scalar', array['cofounder', 'collaborator', 'advisor', 'employee', 'contractor']),
    (17, 'commitmentHorizon', 3, 'scalar', array['project_based', 'ongoing', 'long_term']),
    (18, 'equityOrRevShare', 3, 'scalar', array['equity', 'rev_share', 'salary', 'hybrid', 'tbd']),
    (19, 'complementarySkills', 3, 'array', array[
        'engineering', 'design', 'sales', 'marketing', 'finance', 'operations', 'product', 'legal',
        'data science', 'fundraising', 'hiring', 'writing', 'research', 'devops', 'mobile',
        'community', 'partnerships', 'support', 'strategy', 'video']),
    (20, 'creativeType', 4, 'scalar', array['music', 'writing', 'visual_art', 'film', 'performance', 'other']),
    (21, 'roleNeeded', 4, 'scalar', array['co_creator', 'contributor', 'feedback', 'production']),
    (22, 'processStyle', 4, 'scalar', array['structured', 'spontaneous', 'hybrid']),
    (23, 'egoBalance', 4, 'scalar', array['shared_vision', 'lead_follow', 'independent']),
    (24, 'compensationExpectation', 4, 'scalar', array['paid', 'profit_share', 'free', 'depends']),
    (25, 'serviceType', 5, 'scalar', array['offering', 'seeking']),
    (26, 'budgetRange', 5, 'scalar', array['under_1k', '1k_5k', '5k_20k', '20k_plus', 'flexible']),
    (27, 'timelineNeeded', 5, 'scalar', array['urgent', 'weeks', 'months', 'flexible']),
    (28, 'credentialsRequired', 5, 'scalar', array['licensed', 'experienced', 'portfolio', 'flexible'])
),

unknown_keys (keys) as (
    -- keys the field map does not know (~10% of all keys), some of them near-misses of real keys
    values (array[
        'notes', 'bio', 'favouriteColor', 'zodiacSign', 'Location', 'LOCATION', 'hobbies', 'height',
        'pets', 'education', 'occupation', 'languages', 'instagram', 'onboardingStep',
        'lastPromptVersion', 'coreValue', 'CoreValues', 'location ', 'ageRangeOld', 'preferredName',
        'timezone', 'pronouns', 'dealBreakers', 'loveLanguage', 'musicTaste', 'travelStyle',
        'idealWeekend', 'personalityType', 'mbti', 'sleepSchedule', 'dietNotes', 'petPeeves',
        'funFact', 'relationshipStatus', 'kids', 'workHistory', 'chatSummary', 'tone', 'legacyScore',
        'importedFrom'])
),

profiles as (
    select
        slots.*,
        pg_temp.gen_r(slots.pn, 40) as blob_kind,
        pg_temp.gen_r(slots.pn, 31) * interval '14 days' as created_after
    from slots
)

insert into "Profile" ("id", "contextProfileId", "data", "completeness", "missing", "createdAt", "updatedAt")
select
    pg_temp.gen_id(300, p.pn),
    case
        when p.j < 7 then pg_temp.gen_id(200, p.cpn)
        -- orphan Profiles: a deleted context profile's id, or a near miss of a real one's
        when pg_temp.gen_r(p.u, 17) < 0.7 then pg_temp.gen_id(200, p.cpn)
        else upper(pg_temp.gen_id(200, p.u * 8 + 1))
    end,
    case
        when p.blob_kind < 0.005 then null  -- SQL NULL
        when p.blob_kind < 0.008 then 'null'::jsonb
        when p.blob_kind < 0.011 then
            (array[
                jsonb_build_array('romantic', 'notes'), to_jsonb('imported from v1'::text), to_jsonb(42),
                to_jsonb(true), jsonb_build_array()
            ])[1 + floor(pg_temp.gen_r(p.pn, 41) * 5)::integer]
        when p.blob_kind < 0.014 then jsonb_build_object()
        else coalesce((
            select jsonb_object_agg(entry.key, entry.value)
            from (
                -- mapped keys of the profile's type (~92% each), and wrong-context intent keys (~2.5% each)
                select
                    c.key,
                    case
                        when pg_temp.gen_r(p.pn, 500 + c.pos) < 0.01 then 'null'::jsonb
                        -- ~2.2% type mismatches: the wrong shape for the field's kind
                        when pg_temp.gen_r(p.pn, 400 + c.pos) < 0.022 and c.ctx in (0, p.t + 1) then
                            case c.kind
                                when 'scalar' then
                                    case when pg_temp.gen_r(p.pn, 401) < 0.5
                                        then jsonb_build_array(c.pool[1])
                                        else jsonb_build_object('value', c.pool[1]) end
                                when 'array' then jsonb_build_object('items', jsonb_build_array(c.pool[1]))
                                else to_jsonb('see chat history'::text)
                            end
                        when c.kind = 'scalar' and c.pos = 6 then
                            -- location: the user's city; ~4% padded with whitespace (trimmed away),
                            -- ~1% blank; varies by context for location_varies users
                            to_jsonb(
                                case
                                    when pg_temp.gen_r(p.pn, 601) < 0.01 then E' \t '
                                    when pg_temp.gen_r(p.pn, 602) < 0.04 then E' ' || c.pool[
                                        1 + mod(floor(pg_temp.gen_r(p.u, 1000 + c.pos) * 40)::integer
                                            + case when p.location_varies then p.j + p.k else 0 end, 40)
                                    ] || E'\n'
                                    else c.pool[
                                        1 + mod(floor(pg_temp.gen_r(p.u, 1000 + c.pos) * 40)::integer
                                            + case when p.location_varies then p.j + p.k else 0 end, 40)
                                    ]
                                end
                            )
                        when c.kind = 'scalar' and c.pos = 7 and pg_temp.gen_r(p.u, 603) < 0.05 then
                            -- ~5% of users give an age: as a number or as its text (both normalise to "30")
                            case when pg_temp.gen_r(p.pn, 604) < 0.5
                                then to_jsonb(18 + floor(pg_temp.gen_r(p.u, 605) * 50)::integer)
                                else to_jsonb((18 + floor(pg_temp.gen_r(p.u, 605) * 50)::integer)::text)
                            end
                        when c.kind = 'scalar' then
                            -- shared scalars: the user's value; intent scalars: the (user, type)'s value
                            to_jsonb(c.pool[1 + floor(
                                pg_temp.gen_r(case when c.ctx = 0 then p.u else p.intent_key end, 1000 + c.pos)
                                * cardinality(c.pool))::integer])
                        when c.kind = 'array' then
                            -- 0-4 values from a per-user subset of the pool (so contexts overlap), ~3% of
                            -- them padded, ~2% with a duplicate, ~1% with a number
                            to_jsonb(
                                (array[
                                    case when pg_temp.gen_r(p.pn, 610) < 0.03 then ' ' else '' end
                                    || c.pool[1 + mod(floor(pg_temp.gen_r(p.u, 1000 + c.pos) * 30)::integer
                                        + 7 * floor(pg_temp.gen_r(p.pn, 611) * 4)::integer, cardinality(c.pool))],
                                    c.pool[1 + mod(floor(pg_temp.gen_r(p.u, 1000 + c.pos) * 30)::integer
                                        + 7 * floor(pg_temp.gen_r(p.pn, 612) * 4)::integer + 3, cardinality(c.pool))],
                                    c.pool[1 + mod(floor(pg_temp.gen_r(p.u, 1000 + c.pos) * 30)::integer
                                        + 7 * floor(pg_temp.gen_r(p.pn, 613) * 4)::integer + 5, cardinality(c.pool))],
                                    c.pool[1 + mod(floor(pg_temp.gen_r(p.u, 1000 + c.pos) * 30)::integer
                                        + 11, cardinality(c.pool))]
                                ])[1:floor(pg_temp.gen_r(p.pn, 614) * 5)::integer]
                            )
                            || case when pg_temp.gen_r(p.pn, 615) < 0.02
                                then jsonb_build_array(c.pool[1 + mod(floor(pg_temp.gen_r(p.u, 1000 + c.pos) * 30)::integer
                                    + 7 * floor(pg_temp.gen_r(p.pn, 611) * 4)::integer, cardinality(c.pool))])
                                else jsonb_build_array() end
                            || case when pg_temp.gen_r(p.pn, 616) < 0.01
                                then jsonb_build_array(floor(pg_temp.gen_r(p.pn, 617) * 10)::integer)
                                else jsonb_build_array() end
                        when c.pos = 3 then
                            -- beliefs: the user's views, each sub-key present ~70% of the time; a few
                            -- JSON null sub-values (dropped); ~0.5% of users vary by context
                            jsonb_strip_nulls(jsonb_build_object(
                                'religion', case when pg_temp.gen_r(p.pn, 620) < 0.7 then
                                    (array['none', 'christian', 'muslim', 'jewish', 'hindu', 'buddhist', 'spiritual'])[
                                        1 + mod(floor(pg_temp.gen_r(p.u, 621) * 7)::integer
                                            + case when p.beliefs_vary then p.j else 0 end, 7)] end,
                                'politics', case when pg_temp.gen_r(p.pn, 622) < 0.6 then
                                    (array['progressive', 'moderate', 'conservative', 'apolitical', 'libertarian'])[
                                        1 + floor(pg_temp.gen_r(p.u, 623) * 5)::integer] end,
                                'spirituality', case when pg_temp.gen_r(p.pn, 624) < 0.5 then
                                    (array['important', 'somewhat', 'not important'])[
                                        1 + floor(pg_temp.gen_r(p.u, 625) * 3)::integer] end,
                                'astrology', case when pg_temp.gen_r(p.pn, 626) < 0.2 then
                                    to_jsonb(pg_temp.gen_r(p.u, 627) < 0.5) end
                            ))
                            || case when pg_temp.gen_r(p.pn, 628) < 0.02
                                then jsonb_build_object('politics', null) else jsonb_build_object() end
                        when c.pos = 4 then
                            jsonb_strip_nulls(jsonb_build_object(
                                'communication', case when pg_temp.gen_r(p.pn, 630) < 0.7 then
                                    (array['texting', 'calls', 'in person', 'voice notes'])[
                                        1 + floor(pg_temp.gen_r(p.u, 631) * 4)::integer] end,
                                'conflict', case when pg_temp.gen_r(p.pn, 632) < 0.5 then
                                    (array['talk it out', 'need space', 'avoid'])[
                                        1 + floor(pg_temp.gen_r(p.u, 633) * 3)::integer] end,
                                'humor', case when pg_temp.gen_r(p.pn, 634) < 0.5 then
                                    (array['dry', 'silly', 'sarcastic', 'wholesome'])[
                                        1 + floor(pg_temp.gen_r(p.u, 635) * 4)::integer] end,
                                'pace', case when pg_temp.gen_r(p.pn, 636) < 0.4 then
                                    to_jsonb(1 + floor(pg_temp.gen_r(p.u, 637) * 5)::integer) end
                            ))
                        else
                            jsonb_strip_nulls(jsonb_build_object(
                                'diet', case when pg_temp.gen_r(p.pn, 640) < 0.6 then
                                    (array['omnivore', 'vegetarian', 'vegan', 'pescatarian', 'halal', 'kosher'])[
                                        1 + floor(pg_temp.gen_r(p.u, 641) * 6)::integer] end,
                                'exercisePerWeek', case when pg_temp.gen_r(p.pn, 642) < 0.5 then
                                    to_jsonb(floor(pg_temp.gen_r(p.u, 643) * 7)::integer) end,
                                'smoking', case when pg_temp.gen_r(p.pn, 644) < 0.5 then
                                    to_jsonb(pg_temp.gen_r(p.u, 645) < 0.15) end,
                                'drinking', case when pg_temp.gen_r(p.pn, 646) < 0.5 then
                                    (array['never', 'socially', 'often'])[
                                        1 + floor(pg_temp.gen_r(p.u, 647) * 3)::integer] end,
                                'pets', case when pg_temp.gen_r(p.pn, 648) < 0.3 then
                                    jsonb_build_array('dog', 'cat') end
                            ))
                    end as value
                from catalog as c
                where case
                    when c.ctx = 0 or c.ctx = p.t + 1 then pg_temp.gen_r(p.pn, 200 + c.pos) < 0.92
                    else pg_temp.gen_r(p.pn, 200 + c.pos) < 0.025
                end
                union all
                -- unknown keys: 0-3 distinct ones, values of every JSON type
                select
                    unknown_keys.keys[1 + mod(floor(pg_temp.gen_r(p.pn, 700) * 40)::integer + e, 40)],
                    case floor(pg_temp.gen_r(p.pn * 4 + e, 701) * 6)::integer
                        when 0 then to_jsonb('free text ' || floor(pg_temp.gen_r(p.pn * 4 + e, 702) * 1000)::integer)
                        when 1 then to_jsonb(floor(pg_temp.gen_r(p.pn * 4 + e, 702) * 200)::integer)
                        when 2 then to_jsonb(pg_temp.gen_r(p.pn * 4 + e, 702) < 0.5)
                        when 3 then jsonb_build_array('a', 1.50, null)
                        when 4 then jsonb_build_object('source', 'v1', 'score', 0.75)
                        else 'null'::jsonb
                    end
                from unknown_keys
                cross join lateral generate_series(1, floor(pg_temp.gen_r(p.pn, 703) * 3.5)::integer) as e
            ) as entry
        ), jsonb_build_object())
    end,
    floor(pg_temp.gen_r(p.pn, 32) * 101)::integer,
    case
        when pg_temp.gen_r(p.pn, 33) < 0.3 then null
        else (array['location', 'ageRange', 'coreValues', 'beliefs'])[1:floor(pg_temp.gen_r(p.pn, 34) * 5)::integer]
    end,
    p.cp_created + p.created_after,
    p.cp_created + p.created_after + pg_temp.gen_r(p.pn, 35) * interval '60 days'
from profiles as p;

-- name: chat_messages
insert into "ChatMessage" ("id", "contextProfileId", "role", "content", "createdAt")
select
    pg_temp.gen_id(400, (u * 8 + j) * 16 + m),
    pg_temp.gen_id(200, u * 8 + j),
    case when mod(m, 2) = 1 then 'user' else 'assistant' end,
    (array['Hi!', 'Tell me more about what you are looking for.', 'I love hiking and cooking.',
           'What matters most to you in a partner?', 'I work in design, mostly remote.',
           'Sounds great.', 'How do you usually spend weekends?', 'I am new in town.',
           'Could you say more about your timeline?', 'Thanks, that helps a lot.'])[
        1 + floor(pg_temp.gen_r((u * 8 + j) * 16 + m, 71) * 10)::integer]
    || case when pg_temp.gen_r((u * 8 + j) * 16 + m, 72) < 0.5
        then ' (' || floor(pg_temp.gen_r((u * 8 + j) * 16 + m, 73) * 100000)::integer || ')' else '' end,
    case when j = 6 then pg_temp.user_created(u) else pg_temp.cp_created(u, j) end
        + m * interval '3 minutes' + pg_temp.gen_r((u * 8 + j) * 16 + m, 74) * interval '2 minutes'
from generate_series(%(lo)s::bigint, %(hi)s::bigint) as u
cross join lateral generate_series(1, 6) as j
cross join lateral generate_series(
    1,
    case
        when j <= 5 and pg_temp.cp_exists(u, j) then floor(pg_temp.gen_r(u * 8 + j, 70) * 11)::integer
        -- ~0.2% of users: a few chat messages whose context profile does not exist
        when j = 6 and u <= pg_temp.users() and pg_temp.gen_r(u, 75) < 0.002 then 2
        else 0
    end
) as m;
