-- Stops the psql session, printing INCOMPLETE, unless the database holds at least :expected
-- user tables (one for every table the dump has data for); nothing after it runs then.
SELECT count(*) >= :expected AS complete
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \gset
\if :complete
\else
\echo INCOMPLETE
\quit
\endif
