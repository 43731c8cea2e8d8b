-- Why: the JSON API (/api/v1) authenticates with bearer tokens that users create in their
-- settings. Only a SHA-256 digest of each token is stored, so a leaked database or backup holds
-- no usable token; the digest is unique so a request finds its token with one index lookup.
-- Revoked tokens keep their row (revoked_at) so the settings page can tell what happened; the
-- row goes with its user (ON DELETE CASCADE) when the account is deleted.

CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL,
    token_hash text NOT NULL UNIQUE,
    -- The first characters of the token ("chatapp_AbCd"), shown so a user can tell tokens apart.
    hint text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id, created_at DESC);
