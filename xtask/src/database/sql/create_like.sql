-- CREATE DATABASE :name with the owner, encoding, locale and tablespace of :like, if that one
-- exists (the statement is built, then run by \gexec). The columns are read through to_jsonb
-- so that servers with and without locale providers (PostgreSQL 15+) and with either name for
-- the ICU locale (17 renamed it) all work.
SELECT format('CREATE DATABASE %I TEMPLATE template0 OWNER %I TABLESPACE %I '
              'ENCODING %L LC_COLLATE %L LC_CTYPE %L',
              :'name', pg_get_userbyid(d.datdba), t.spcname,
              pg_encoding_to_char(d.encoding), d.datcollate, d.datctype)
       || CASE j->>'datlocprovider'
            WHEN 'c' THEN ' LOCALE_PROVIDER libc'
            WHEN 'i' THEN format(' LOCALE_PROVIDER icu ICU_LOCALE %L',
                                 coalesce(j->>'daticulocale', j->>'datlocale'))
            WHEN 'b' THEN format(' LOCALE_PROVIDER builtin BUILTIN_LOCALE %L', j->>'datlocale')
            ELSE '' END
       || CASE WHEN j->>'daticurules' IS NULL THEN ''
               ELSE format(' ICU_RULES %L', j->>'daticurules') END
FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace, to_jsonb(d) j
WHERE d.datname = :'like' \gexec
