-- The client connections to :target: one row per `user from address (application)`, with ×N
-- for a pool of alike ones, and how many.
SELECT format('%s from %s%s%s', usename, coalesce(host(client_addr), 'a local socket'),
              CASE WHEN application_name <> '' THEN format(' (%s)', application_name)
                   ELSE '' END,
              CASE WHEN count(*) > 1 THEN format(' ×%s', count(*)) ELSE '' END),
       count(*)
FROM pg_stat_activity WHERE datname = :'target' AND backend_type = 'client backend'
GROUP BY usename, client_addr, application_name ORDER BY 1
