-- Renames :target aside to :previous and :scratch to :target in one transaction, ending the
-- target's open connections first (the first row: how many).
BEGIN;
SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
WHERE datname = :'target' AND pid <> pg_backend_pid();
ALTER DATABASE :"target" RENAME TO :"previous";
ALTER DATABASE :"scratch" RENAME TO :"target";
COMMIT;
