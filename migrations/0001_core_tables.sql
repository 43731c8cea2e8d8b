-- Why: the source of truth of chatapp. Users own threads; a thread's messages form a tree
-- (adjacency list through parent_id) so edits and regenerations add siblings instead of
-- rewriting history; the visible branch is the path from threads.current_leaf_id to the root.
-- One row per message (never one JSON blob per conversation) so a token never rewrites a chat.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    password_hash text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    is_admin boolean NOT NULL DEFAULT false,
    disabled_at timestamptz,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Case-insensitive uniqueness without the citext extension.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE threads (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title text NOT NULL DEFAULT 'New chat',
    model text,
    system_prompt text NOT NULL DEFAULT '',
    params jsonb NOT NULL DEFAULT '{}'::jsonb,
    current_leaf_id uuid,
    pinned boolean NOT NULL DEFAULT false,
    folder text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz,
    archive_key text
);
CREATE INDEX threads_user_updated_idx ON threads (user_id, updated_at DESC);

CREATE TABLE messages (
    id uuid PRIMARY KEY,
    thread_id uuid NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    parent_id uuid REFERENCES messages (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'complete'
        CHECK (status IN ('complete', 'streaming', 'stopped', 'interrupted', 'error')),
    model text,
    prompt_tokens integer,
    completion_tokens integer,
    usage_estimated boolean NOT NULL DEFAULT false,
    finish_reason text,
    duration_ms integer,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
CREATE INDEX messages_thread_idx ON messages (thread_id, created_at);
CREATE INDEX messages_parent_idx ON messages (parent_id);
-- The reaper looks only at answers still streaming.
CREATE INDEX messages_streaming_idx ON messages (created_at) WHERE status = 'streaming';
CREATE INDEX messages_search_idx ON messages USING gin (search);

ALTER TABLE threads ADD CONSTRAINT threads_current_leaf_fk
    FOREIGN KEY (current_leaf_id) REFERENCES messages (id) ON DELETE SET NULL
    DEFERRABLE INITIALLY DEFERRED;

-- Run-time configuration an admin may change; the environment gives the default.
CREATE TABLE app_settings (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid REFERENCES users (id) ON DELETE SET NULL
);
