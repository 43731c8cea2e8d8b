-- Why: read-only share links. A share is a snapshot of a thread's visible branch taken when the
-- owner shares it, so later messages, edits or deletions of single messages never leak into it.
-- The snapshot is written once and never updated per token, so one jsonb list of messages is
-- the right shape here (unlike live threads). The id is the secret in the link
-- (secrets.token_urlsafe(24), 192 bits); the owner needs to see it again, so it is stored as is.
-- One share per thread: sharing again refreshes the snapshot under the same link; revoking
-- deletes the row, and the link answers 404. Shares go with their thread and their user.

CREATE TABLE shares (
    id text PRIMARY KEY,
    thread_id uuid NOT NULL UNIQUE REFERENCES threads (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title text NOT NULL,
    messages jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shares_user_idx ON shares (user_id);
