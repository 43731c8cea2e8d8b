-- Why: users organise many threads. Folders are rows (not a free-text label on each thread) so an
-- empty folder can exist and a rename or delete touches one row; a thread points at its folder
-- and is simply in no folder (ON DELETE SET NULL) when the folder goes. The older free-text
-- column threads.folder from 0001 stays unused (dropping it would break readers of that column).
-- A folder collects threads without hiding them: the sidebar still lists every thread by date.
-- The sidebar pages through a user's threads by (updated_at, id); the partial indexes match its
-- two queries: pinned threads first, then the unpinned ones newest first.

CREATE TABLE folders (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- One folder of a name per user, whatever the case ("Work" and "work" would confuse).
CREATE UNIQUE INDEX folders_user_name_key ON folders (user_id, lower(name));

ALTER TABLE threads ADD COLUMN folder_id uuid REFERENCES folders (id) ON DELETE SET NULL;
CREATE INDEX threads_folder_idx ON threads (folder_id, updated_at DESC, id DESC) WHERE folder_id IS NOT NULL;
CREATE INDEX threads_user_pinned_idx ON threads (user_id, updated_at DESC) WHERE pinned;
CREATE INDEX threads_user_unpinned_idx ON threads (user_id, updated_at DESC, id DESC) WHERE NOT pinned;
