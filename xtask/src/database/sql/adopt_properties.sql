-- Gives :scratch what :like has that a restore does not carry: its connection limit, comment,
-- privileges and settings (ALTER DATABASE ... SET, also per role). Written out as
-- pg_dump --create would (list settings such as search_path keep their own quoting).
SELECT format('ALTER DATABASE %I CONNECTION LIMIT %s', :'scratch', datconnlimit)
FROM pg_database WHERE datname = :'like' AND datconnlimit <> -1 \gexec

SELECT format('COMMENT ON DATABASE %I IS %L', :'scratch', c)
FROM pg_database d, shobj_description(d.oid, 'pg_database') c
WHERE d.datname = :'like' AND c IS NOT NULL \gexec

SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'scratch'),
       format('REVOKE ALL ON DATABASE %I FROM %I', :'scratch', pg_get_userbyid(datdba))
FROM pg_database WHERE datname = :'like' AND datacl IS NOT NULL \gexec

SELECT format('GRANT %s ON DATABASE %I TO %s%s', a.privilege_type, :'scratch',
              CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                   ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = :'like' \gexec

SELECT format('ALTER %sDATABASE %I SET %I TO %s',
              CASE WHEN s.setrole = 0 THEN ''
                   ELSE format('ROLE %I IN ', pg_get_userbyid(s.setrole)) END,
              :'scratch', split_part(c, '=', 1),
              CASE WHEN split_part(c, '=', 1) IN ('local_preload_libraries', 'search_path',
                       'session_preload_libraries', 'shared_preload_libraries',
                       'temp_tablespaces', 'unix_socket_directories')
                   THEN CASE substr(c, strpos(c, '=') + 1) WHEN '""' THEN ''''''
                             ELSE substr(c, strpos(c, '=') + 1) END
                   ELSE quote_literal(substr(c, strpos(c, '=') + 1)) END)
FROM pg_database d JOIN pg_db_role_setting s ON s.setdatabase = d.oid, unnest(s.setconfig) c
WHERE d.datname = :'like' ORDER BY s.setrole, c \gexec
