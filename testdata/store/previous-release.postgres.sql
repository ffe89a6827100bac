--
-- PostgreSQL database dump
--

\restrict mXOvwYbp5jl0okR0Jip7Teyaih1Biahm3NB3xcth36Kwp57HwBPcXaZXFDRcE0p

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: unaccent; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;


--
-- Name: EXTENSION unaccent; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON EXTENSION unaccent IS 'text search dictionary that removes accents';


--
-- Name: chatbus_event_deleted(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.chatbus_event_deleted() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE channels SET
        event_count   = event_count - 1,
        message_count = message_count - (OLD.kind IN ('message', 'action', 'cheer', 'super_chat'))::int
    WHERE id = OLD.channel_ref;
    DELETE FROM event_ids WHERE platform = OLD.platform AND event_id = OLD.event_id;
    IF OLD.kind IN ('message_delete', 'ban', 'timeout', 'chat_clear') THEN
        DELETE FROM moderations WHERE seq = OLD.seq;
    END IF;
    RETURN NULL;
END $$;


--
-- Name: chatbus_fold(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.chatbus_fold(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT translate(lower(public.unaccent('public.unaccent'::regdictionary, t)), 'ς', 'σ') $$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: _sqlx_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public._sqlx_migrations (
    version bigint NOT NULL,
    description text NOT NULL,
    installed_on timestamp with time zone DEFAULT now() NOT NULL,
    success boolean NOT NULL,
    checksum bytea NOT NULL,
    execution_time bigint NOT NULL
);


--
-- Name: channels; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.channels (
    id bigint NOT NULL,
    platform text NOT NULL,
    channel text NOT NULL,
    routing_key text NOT NULL,
    event_count bigint DEFAULT 0 NOT NULL,
    message_count bigint DEFAULT 0 NOT NULL,
    last_cursor bigint,
    last_event_at bigint
);


--
-- Name: channels_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.channels_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: channels_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.channels_id_seq OWNED BY public.channels.id;


--
-- Name: cursor_head; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.cursor_head (
    singleton boolean DEFAULT true NOT NULL,
    seq bigint NOT NULL,
    CONSTRAINT cursor_head_singleton_check CHECK (singleton)
);


--
-- Name: event_ids; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.event_ids (
    platform text NOT NULL,
    event_id text NOT NULL,
    seq bigint NOT NULL,
    stored_at bigint NOT NULL
);


--
-- Name: events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events (
    seq bigint NOT NULL,
    platform text NOT NULL,
    event_id text NOT NULL,
    channel_ref bigint NOT NULL,
    kind text NOT NULL,
    sent_at bigint NOT NULL,
    stored_at bigint NOT NULL,
    author_login text,
    text text,
    body text NOT NULL,
    moderation text,
    moderated_by bigint,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, public.chatbus_fold(COALESCE(text, ''::text)))) STORED
)
PARTITION BY RANGE (stored_at);


--
-- Name: events_default; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events_default (
    seq bigint NOT NULL,
    platform text NOT NULL,
    event_id text NOT NULL,
    channel_ref bigint NOT NULL,
    kind text NOT NULL,
    sent_at bigint NOT NULL,
    stored_at bigint NOT NULL,
    author_login text,
    text text,
    body text NOT NULL,
    moderation text,
    moderated_by bigint,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, public.chatbus_fold(COALESCE(text, ''::text)))) STORED
);


--
-- Name: events_p20261204; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events_p20261204 (
    seq bigint NOT NULL,
    platform text NOT NULL,
    event_id text NOT NULL,
    channel_ref bigint NOT NULL,
    kind text NOT NULL,
    sent_at bigint NOT NULL,
    stored_at bigint NOT NULL,
    author_login text,
    text text,
    body text NOT NULL,
    moderation text,
    moderated_by bigint,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, public.chatbus_fold(COALESCE(text, ''::text)))) STORED
);


--
-- Name: events_p20261205; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events_p20261205 (
    seq bigint NOT NULL,
    platform text NOT NULL,
    event_id text NOT NULL,
    channel_ref bigint NOT NULL,
    kind text NOT NULL,
    sent_at bigint NOT NULL,
    stored_at bigint NOT NULL,
    author_login text,
    text text,
    body text NOT NULL,
    moderation text,
    moderated_by bigint,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, public.chatbus_fold(COALESCE(text, ''::text)))) STORED
);


--
-- Name: moderations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.moderations (
    seq bigint NOT NULL,
    channel_ref bigint NOT NULL,
    action text NOT NULL,
    target_event_id text,
    target_login text,
    at bigint NOT NULL
);


--
-- Name: events_default; Type: TABLE ATTACH; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events ATTACH PARTITION public.events_default DEFAULT;


--
-- Name: events_p20261204; Type: TABLE ATTACH; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events ATTACH PARTITION public.events_p20261204 FOR VALUES FROM ('1796342400000') TO ('1796428800000');


--
-- Name: events_p20261205; Type: TABLE ATTACH; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events ATTACH PARTITION public.events_p20261205 FOR VALUES FROM ('1796428800000') TO ('1796515200000');


--
-- Name: channels id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.channels ALTER COLUMN id SET DEFAULT nextval('public.channels_id_seq'::regclass);


--
-- Data for Name: _sqlx_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public._sqlx_migrations VALUES (1, 'events', '2026-12-04 11:33:31.245392+00', true, '\x4c23bac0bacda62dce26d0adb2b4e5a7afe7567257ebbc2007656df1a6e8dd3797482dd1509ce57a7e8380bde83be8c3', 74118655);


--
-- Data for Name: channels; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.channels VALUES (1, 'youtube', 'UCX6OQ3DkcsbYNE6H8uQQuVA', 'chat.youtube.-55-43-586-4f-513-44kcsb-59-4e-456-488u-51-51u-56-41', 3, 3, 5, 1736942405000);
INSERT INTO public.channels VALUES (2, 'twitch', 'fixture_chan', 'chat.twitch.fixture_chan', 2, 2, 7, 1736942407000);
INSERT INTO public.channels VALUES (3, 'youtube', 'UC-lHJZR3Gqxm24_Vd_AJ5Yw', 'chat.youtube.-55-43-2dl-48-4a-5a-523-47qxm24_-56d_-41-4a5-59w', 1, 1, 4, 1736942404000);
INSERT INTO public.channels VALUES (4, 'youtube', 'UCXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX', 'chat.youtube.-55-43-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58-58--362e77767f1fdebe2b7a533e5cf978e1', 1, 1, 6, 1736942406000);


--
-- Data for Name: cursor_head; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.cursor_head VALUES (true, 7);


--
-- Data for Name: event_ids; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.event_ids VALUES ('youtube', 'youtube-fixture-1', 1, 1796384011371);
INSERT INTO public.event_ids VALUES ('twitch', 'twitch-fixture-2', 2, 1796384011371);
INSERT INTO public.event_ids VALUES ('youtube', 'youtube-fixture-3', 3, 1796384011371);
INSERT INTO public.event_ids VALUES ('youtube', 'youtube-fixture-4', 4, 1796384011371);
INSERT INTO public.event_ids VALUES ('youtube', 'youtube-fixture-5', 5, 1796384011371);
INSERT INTO public.event_ids VALUES ('youtube', 'youtube-fixture-6', 6, 1796384011371);
INSERT INTO public.event_ids VALUES ('twitch', 'twitch-fixture-7', 7, 1796384011371);


--
-- Data for Name: events_default; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: events_p20261204; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.events_p20261204 VALUES (1, 'youtube', 'youtube-fixture-1', 1, 'message', 1736942401000, 1796384011371, 'user1', 'first on the upper-case channel', '{"schema_version":1,"id":"youtube-fixture-1","platform":"youtube","channel":"UCX6OQ3DkcsbYNE6H8uQQuVA","channel_id":"UCX6OQ3DkcsbYNE6H8uQQuVA","sent_at":"2025-01-15T12:00:01Z","received_at":"2025-01-15T12:00:01Z","author":{"id":"youtube-user-1","login":"user1","display_name":"User1","color":null,"badges":[],"roles":[]},"text":"first on the upper-case channel","emotes":[],"reply_to":null,"kind":"message","details":{"first_message":false,"returning_chatter":false,"highlighted":false,"reward_id":null},"twitch":null,"youtube":{"message_type":"textMessageEvent","live_chat_id":"fixture-live-chat","video_id":"fixtureVid1","published_at":"2025-01-15T12:00:01+00:00","author_channel_url":null,"display_message":"first on the upper-case channel"},"raw":null}', NULL, NULL, DEFAULT);
INSERT INTO public.events_p20261204 VALUES (2, 'twitch', 'twitch-fixture-2', 2, 'message', 1736942402000, 1796384011371, 'user2', 'hello from twitch', '{"schema_version":1,"id":"twitch-fixture-2","platform":"twitch","channel":"fixture_chan","channel_id":"12345","sent_at":"2025-01-15T12:00:02Z","received_at":"2025-01-15T12:00:02Z","author":{"id":"twitch-user-2","login":"user2","display_name":"User2","color":null,"badges":[],"roles":[]},"text":"hello from twitch","emotes":[],"reply_to":null,"kind":"message","details":{"first_message":false,"returning_chatter":false,"highlighted":false,"reward_id":null},"twitch":null,"raw":null}', NULL, NULL, DEFAULT);
INSERT INTO public.events_p20261204 VALUES (3, 'youtube', 'youtube-fixture-3', 1, 'message', 1736942403000, 1796384011371, 'user3', 'second on the upper-case channel', '{"schema_version":1,"id":"youtube-fixture-3","platform":"youtube","channel":"UCX6OQ3DkcsbYNE6H8uQQuVA","channel_id":"UCX6OQ3DkcsbYNE6H8uQQuVA","sent_at":"2025-01-15T12:00:03Z","received_at":"2025-01-15T12:00:03Z","author":{"id":"youtube-user-3","login":"user3","display_name":"User3","color":null,"badges":[],"roles":[]},"text":"second on the upper-case channel","emotes":[],"reply_to":null,"kind":"message","details":{"first_message":false,"returning_chatter":false,"highlighted":false,"reward_id":null},"twitch":null,"youtube":{"message_type":"textMessageEvent","live_chat_id":"fixture-live-chat","video_id":"fixtureVid1","published_at":"2025-01-15T12:00:03+00:00","author_channel_url":null,"display_message":"second on the upper-case channel"},"raw":null}', NULL, NULL, DEFAULT);
INSERT INTO public.events_p20261204 VALUES (4, 'youtube', 'youtube-fixture-4', 3, 'message', 1736942404000, 1796384011371, 'user4', 'a channel id with a dash', '{"schema_version":1,"id":"youtube-fixture-4","platform":"youtube","channel":"UC-lHJZR3Gqxm24_Vd_AJ5Yw","channel_id":"UC-lHJZR3Gqxm24_Vd_AJ5Yw","sent_at":"2025-01-15T12:00:04Z","received_at":"2025-01-15T12:00:04Z","author":{"id":"youtube-user-4","login":"user4","display_name":"User4","color":null,"badges":[],"roles":[]},"text":"a channel id with a dash","emotes":[],"reply_to":null,"kind":"message","details":{"first_message":false,"returning_chatter":false,"highlighted":false,"reward_id":null},"twitch":null,"youtube":{"message_type":"textMessageEvent","live_chat_id":"fixture-live-chat","video_id":"fixtureVid1","published_at":"2025-01-15T12:00:04+00:00","author_channel_url":null,"display_message":"a channel id with a dash"},"raw":null}', NULL, NULL, DEFAULT);
INSERT INTO public.events_p20261204 VALUES (5, 'youtube', 'youtube-fixture-5', 1, 'message', 1736942405000, 1796384011371, 'user5', 'third on the upper-case channel', '{"schema_version":1,"id":"youtube-fixture-5","platform":"youtube","channel":"UCX6OQ3DkcsbYNE6H8uQQuVA","channel_id":"UCX6OQ3DkcsbYNE6H8uQQuVA","sent_at":"2025-01-15T12:00:05Z","received_at":"2025-01-15T12:00:05Z","author":{"id":"youtube-user-5","login":"user5","display_name":"User5","color":null,"badges":[],"roles":[]},"text":"third on the upper-case channel","emotes":[],"reply_to":null,"kind":"message","details":{"first_message":false,"returning_chatter":false,"highlighted":false,"reward_id":null},"twitch":null,"youtube":{"message_type":"textMessageEvent","live_chat_id":"fixture-live-chat","video_id":"fixtureVid1","published_at":"2025-01-15T12:00:05+00:00","author_channel_url":null,"display_message":"third on the upper-case channel"},"raw":null}', NULL, NULL, DEFAULT);
INSERT INTO public.events_p20261204 VALUES (6, 'youtube', 'youtube-fixture-6', 4, 'message', 1736942406000, 1796384011371, 'user6', 'a channel whose old key was hashed', '{"schema_version":1,"id":"youtube-fixture-6","platform":"youtube","channel":"UCXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","channel_id":"UCXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","sent_at":"2025-01-15T12:00:06Z","received_at":"2025-01-15T12:00:06Z","author":{"id":"youtube-user-6","login":"user6","display_name":"User6","color":null,"badges":[],"roles":[]},"text":"a channel whose old key was hashed","emotes":[],"reply_to":null,"kind":"message","details":{"first_message":false,"returning_chatter":false,"highlighted":false,"reward_id":null},"twitch":null,"youtube":{"message_type":"textMessageEvent","live_chat_id":"fixture-live-chat","video_id":"fixtureVid1","published_at":"2025-01-15T12:00:06+00:00","author_channel_url":null,"display_message":"a channel whose old key was hashed"},"raw":null}', NULL, NULL, DEFAULT);
INSERT INTO public.events_p20261204 VALUES (7, 'twitch', 'twitch-fixture-7', 2, 'message', 1736942407000, 1796384011371, 'user7', 'bye from twitch', '{"schema_version":1,"id":"twitch-fixture-7","platform":"twitch","channel":"fixture_chan","channel_id":"12345","sent_at":"2025-01-15T12:00:07Z","received_at":"2025-01-15T12:00:07Z","author":{"id":"twitch-user-7","login":"user7","display_name":"User7","color":null,"badges":[],"roles":[]},"text":"bye from twitch","emotes":[],"reply_to":null,"kind":"message","details":{"first_message":false,"returning_chatter":false,"highlighted":false,"reward_id":null},"twitch":null,"raw":null}', NULL, NULL, DEFAULT);


--
-- Data for Name: events_p20261205; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: moderations; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Name: channels_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.channels_id_seq', 4, true);


--
-- Name: _sqlx_migrations _sqlx_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public._sqlx_migrations
    ADD CONSTRAINT _sqlx_migrations_pkey PRIMARY KEY (version);


--
-- Name: channels channels_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.channels
    ADD CONSTRAINT channels_pkey PRIMARY KEY (id);


--
-- Name: channels channels_platform_channel_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.channels
    ADD CONSTRAINT channels_platform_channel_key UNIQUE (platform, channel);


--
-- Name: cursor_head cursor_head_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.cursor_head
    ADD CONSTRAINT cursor_head_pkey PRIMARY KEY (singleton);


--
-- Name: event_ids event_ids_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.event_ids
    ADD CONSTRAINT event_ids_pkey PRIMARY KEY (platform, event_id);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (stored_at, seq);


--
-- Name: events_default events_default_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events_default
    ADD CONSTRAINT events_default_pkey PRIMARY KEY (stored_at, seq);


--
-- Name: events_p20261204 events_p20261204_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events_p20261204
    ADD CONSTRAINT events_p20261204_pkey PRIMARY KEY (stored_at, seq);


--
-- Name: events_p20261205 events_p20261205_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events_p20261205
    ADD CONSTRAINT events_p20261205_pkey PRIMARY KEY (stored_at, seq);


--
-- Name: moderations moderations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.moderations
    ADD CONSTRAINT moderations_pkey PRIMARY KEY (seq);


--
-- Name: event_ids_stored_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX event_ids_stored_at ON public.event_ids USING btree (stored_at);


--
-- Name: events_author_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_author_seq ON ONLY public.events USING btree (author_login, seq) WHERE (author_login IS NOT NULL);


--
-- Name: events_channel_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_channel_seq ON ONLY public.events USING btree (channel_ref, seq);


--
-- Name: events_default_author_login_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_default_author_login_seq_idx ON public.events_default USING btree (author_login, seq) WHERE (author_login IS NOT NULL);


--
-- Name: events_default_channel_ref_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_default_channel_ref_seq_idx ON public.events_default USING btree (channel_ref, seq);


--
-- Name: events_kind_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_kind_seq ON ONLY public.events USING btree (kind, seq);


--
-- Name: events_default_kind_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_default_kind_seq_idx ON public.events_default USING btree (kind, seq);


--
-- Name: events_search; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_search ON ONLY public.events USING gin (search);


--
-- Name: events_default_search_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_default_search_idx ON public.events_default USING gin (search);


--
-- Name: events_sent_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_sent_at ON ONLY public.events USING btree (sent_at);


--
-- Name: events_default_sent_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_default_sent_at_idx ON public.events_default USING btree (sent_at);


--
-- Name: events_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_seq ON ONLY public.events USING btree (seq);


--
-- Name: events_default_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_default_seq_idx ON public.events_default USING btree (seq);


--
-- Name: events_p20261204_author_login_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261204_author_login_seq_idx ON public.events_p20261204 USING btree (author_login, seq) WHERE (author_login IS NOT NULL);


--
-- Name: events_p20261204_channel_ref_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261204_channel_ref_seq_idx ON public.events_p20261204 USING btree (channel_ref, seq);


--
-- Name: events_p20261204_kind_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261204_kind_seq_idx ON public.events_p20261204 USING btree (kind, seq);


--
-- Name: events_p20261204_search_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261204_search_idx ON public.events_p20261204 USING gin (search);


--
-- Name: events_p20261204_sent_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261204_sent_at_idx ON public.events_p20261204 USING btree (sent_at);


--
-- Name: events_p20261204_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261204_seq_idx ON public.events_p20261204 USING btree (seq);


--
-- Name: events_p20261205_author_login_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261205_author_login_seq_idx ON public.events_p20261205 USING btree (author_login, seq) WHERE (author_login IS NOT NULL);


--
-- Name: events_p20261205_channel_ref_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261205_channel_ref_seq_idx ON public.events_p20261205 USING btree (channel_ref, seq);


--
-- Name: events_p20261205_kind_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261205_kind_seq_idx ON public.events_p20261205 USING btree (kind, seq);


--
-- Name: events_p20261205_search_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261205_search_idx ON public.events_p20261205 USING gin (search);


--
-- Name: events_p20261205_sent_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261205_sent_at_idx ON public.events_p20261205 USING btree (sent_at);


--
-- Name: events_p20261205_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_p20261205_seq_idx ON public.events_p20261205 USING btree (seq);


--
-- Name: moderations_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX moderations_at ON public.moderations USING btree (at);


--
-- Name: events_default_author_login_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_author_seq ATTACH PARTITION public.events_default_author_login_seq_idx;


--
-- Name: events_default_channel_ref_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_channel_seq ATTACH PARTITION public.events_default_channel_ref_seq_idx;


--
-- Name: events_default_kind_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_kind_seq ATTACH PARTITION public.events_default_kind_seq_idx;


--
-- Name: events_default_pkey; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_pkey ATTACH PARTITION public.events_default_pkey;


--
-- Name: events_default_search_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_search ATTACH PARTITION public.events_default_search_idx;


--
-- Name: events_default_sent_at_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_sent_at ATTACH PARTITION public.events_default_sent_at_idx;


--
-- Name: events_default_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_seq ATTACH PARTITION public.events_default_seq_idx;


--
-- Name: events_p20261204_author_login_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_author_seq ATTACH PARTITION public.events_p20261204_author_login_seq_idx;


--
-- Name: events_p20261204_channel_ref_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_channel_seq ATTACH PARTITION public.events_p20261204_channel_ref_seq_idx;


--
-- Name: events_p20261204_kind_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_kind_seq ATTACH PARTITION public.events_p20261204_kind_seq_idx;


--
-- Name: events_p20261204_pkey; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_pkey ATTACH PARTITION public.events_p20261204_pkey;


--
-- Name: events_p20261204_search_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_search ATTACH PARTITION public.events_p20261204_search_idx;


--
-- Name: events_p20261204_sent_at_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_sent_at ATTACH PARTITION public.events_p20261204_sent_at_idx;


--
-- Name: events_p20261204_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_seq ATTACH PARTITION public.events_p20261204_seq_idx;


--
-- Name: events_p20261205_author_login_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_author_seq ATTACH PARTITION public.events_p20261205_author_login_seq_idx;


--
-- Name: events_p20261205_channel_ref_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_channel_seq ATTACH PARTITION public.events_p20261205_channel_ref_seq_idx;


--
-- Name: events_p20261205_kind_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_kind_seq ATTACH PARTITION public.events_p20261205_kind_seq_idx;


--
-- Name: events_p20261205_pkey; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_pkey ATTACH PARTITION public.events_p20261205_pkey;


--
-- Name: events_p20261205_search_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_search ATTACH PARTITION public.events_p20261205_search_idx;


--
-- Name: events_p20261205_sent_at_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_sent_at ATTACH PARTITION public.events_p20261205_sent_at_idx;


--
-- Name: events_p20261205_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.events_seq ATTACH PARTITION public.events_p20261205_seq_idx;


--
-- Name: events events_after_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER events_after_delete AFTER DELETE ON public.events FOR EACH ROW EXECUTE FUNCTION public.chatbus_event_deleted();


--
-- PostgreSQL database dump complete
--

\unrestrict mXOvwYbp5jl0okR0Jip7Teyaih1Biahm3NB3xcth36Kwp57HwBPcXaZXFDRcE0p

