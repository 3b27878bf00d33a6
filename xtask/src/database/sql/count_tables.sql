-- Each user table of the database it runs in, smallest first, counted with count(*) while it
-- stays under :limit bytes and the running total under :budget: name|count|estimate, the count
-- empty where not counted (query_to_xml runs the count built for that table).
WITH tables AS (
    SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name,
           pg_relation_size(c.oid) AS size, c.reltuples::bigint AS estimate
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
), running AS (
    SELECT *, sum(size) OVER (ORDER BY size, name) AS total FROM tables
)
SELECT name,
       CASE WHEN size <= :limit AND total <= :budget THEN
           (xpath('/row/c/text()', query_to_xml(
               format('SELECT count(*) AS c FROM %s', oid::regclass), false, true, '')))[1]::text
       END,
       estimate
FROM running ORDER BY name
