-- The target :like and every scratch database of a restore, one name a line.
SELECT datname FROM pg_database
WHERE datname = :'like' OR strpos(datname, '_restoring_') > 0
ORDER BY 1
