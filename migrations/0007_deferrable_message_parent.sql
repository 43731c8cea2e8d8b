-- Why: backups stream messages in primary-key order (a recursive parents-first query over the
-- whole table took longer than the CLI's 30 s query timeout at 200,000 messages), so a restore
-- may insert an answer before the question it belongs to. DEFERRABLE lets the restore check
-- parent_id once at commit (SET CONSTRAINTS); INITIALLY IMMEDIATE keeps every other write
-- checked row by row exactly as before, and ON DELETE CASCADE is never deferred.
ALTER TABLE messages ALTER CONSTRAINT messages_parent_id_fkey DEFERRABLE INITIALLY IMMEDIATE;
