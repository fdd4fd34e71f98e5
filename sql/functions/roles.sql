-- Least privilege (README, "Security"). Two cluster-wide group roles, NOLOGIN; people and
-- processes log in as LOGIN roles created IN ROLE one of them:
--
--   waitroom_owner  owns every table, view, sequence and function of the schema. Migrations
--                   run as it (src/store/migrate.rs does SET ROLE waitroom_owner when the
--                   login user is a member), so any member can apply the next migration.
--   waitroom_app    what the running roles need (serve, relay, project, run, rebuild):
--                   waiting_room_events SELECT and INSERT only, never UPDATE, DELETE or
--                   TRUNCATE; the working tables' rows; no DDL (no CREATE on the schema,
--                   owns nothing). LISTEN/NOTIFY, advisory locks and the functions need no grant.
--
-- This file is applied after the migrations, like every file here, and again whenever its
-- text changes: a migration that adds a table adds its grant to waitroom_grant_app below.
-- The migrating user may lack CREATEROLE: then the roles are not created (a warning says
-- so at every start until they exist; a DBA creates them, see the README) and everything
-- else works as before under the migrating user.

-- Creates the two roles when they are missing and this user may. Roles are cluster-global
-- and every database's first migrate gets here, often several at once (tests, roles
-- started together): a concurrent CREATE ROLE fails with duplicate_object or, when both
-- passed the existence check, with unique_violation on pg_authid; either means it exists.
CREATE OR REPLACE FUNCTION waitroom_create_roles() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
                 ('waitroom_owner', 'waitroom: owns the schema; members run migrations'),
                 ('waitroom_app', 'waitroom: runtime privileges of serve, relay, project and rebuild')
             ) AS v(name, description)
              WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v.name) LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r.name);
            EXECUTE format('COMMENT ON ROLE %I IS %L', r.name, r.description);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- created by a concurrent migrate
            WHEN insufficient_privilege THEN
                RAISE WARNING 'role % does not exist and % may not create it', r.name, current_user
                    USING HINT = 'A DBA creates it (README, "Security"); waitroom runs without it meanwhile.';
        END;
    END LOOP;
    RETURN (SELECT count(*) = 2 FROM pg_roles WHERE rolname IN ('waitroom_owner', 'waitroom_app'));
END
$$;

-- Hands every table, view, sequence and function of the schema that this user may give
-- away to waitroom_owner (objects created before the role existed, or by a migrating user
-- that did not SET ROLE). Sequences owned by a column follow their table.
CREATE OR REPLACE FUNCTION waitroom_own_schema() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    owner oid := 'waitroom_owner'::regrole;
    r record;
    moved integer := 0;
BEGIN
    IF NOT pg_has_role(owner, 'MEMBER') THEN
        RAISE WARNING '% is not a member of waitroom_owner: the schema''s objects keep their owners', current_user;
        RETURN 0;
    END IF;
    FOR r IN SELECT format('ALTER %s %s OWNER TO waitroom_owner',
                           CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                          WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                           c.oid::regclass) AS ddl
               FROM pg_class c
              WHERE c.relnamespace = current_schema()::regnamespace
                AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                AND c.relowner <> owner
                AND pg_has_role(c.relowner, 'USAGE')
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                   AND d.deptype IN ('a', 'i', 'e'))
             UNION ALL
             SELECT format('ALTER ROUTINE %s OWNER TO waitroom_owner', p.oid::regprocedure)
               FROM pg_proc p
              WHERE p.pronamespace = current_schema()::regnamespace
                AND p.proowner <> owner
                AND pg_has_role(p.proowner, 'USAGE')
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                   AND d.deptype = 'e') LOOP
        EXECUTE r.ddl;
        moved := moved + 1;
    END LOOP;
    RETURN moved;
END
$$;

-- The app role's privileges, table by table. Functions need none (EXECUTE is PUBLIC's) and
-- run with the caller's privileges, so these cover what they do too.
CREATE OR REPLACE FUNCTION waitroom_grant_app() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO waitroom_app', current_schema());
    -- Events are facts: appended and read, never changed (the triggers of V1 stop even the owner).
    GRANT SELECT, INSERT ON waiting_room_events TO waitroom_app;
    REVOKE UPDATE, DELETE, TRUNCATE ON waiting_room_events FROM waitroom_app;
    GRANT SELECT, INSERT, UPDATE ON waiting_room_snapshots TO waitroom_app;
    -- DELETE: expired Idempotency-Keys (src/store/retention.rs), whose batches lock their
    -- rows FOR UPDATE SKIP LOCKED; that needs UPDATE on some column, and one is enough.
    GRANT SELECT, INSERT, DELETE, UPDATE (created_at) ON idempotency_keys TO waitroom_app;
    GRANT SELECT, UPDATE ON relay_cursor TO waitroom_app;
    GRANT SELECT, INSERT, UPDATE ON waiting_room_outbox_failures TO waitroom_app;
    GRANT SELECT, INSERT, UPDATE ON event_lag_facts TO waitroom_app;
    -- DELETE: a rebuild empties the read models and checkpoints (reset_projection).
    GRANT SELECT, INSERT, UPDATE, DELETE ON projection_checkpoints, waiting_queue_view,
                                            waiting_patients TO waitroom_app;
    -- The relay's idle flag: setval() needs UPDATE, reading last_value SELECT.
    GRANT SELECT, UPDATE ON SEQUENCE relay_wakeup TO waitroom_app;
    -- Read only: the registry, the views, and what start-up compares to know that nothing
    -- is pending (an app user never applies migrations).
    GRANT SELECT ON projections, waiting_patients_view, waiting_room_outbox, event_processing_lag,
                    outbox_pending, relay_state, refinery_schema_history, schema_functions
        TO waitroom_app;
END
$$;

-- Roles, ownership, the schema's CREATE (owner only: also takes it from PUBLIC, as
-- PostgreSQL 15 does for new databases, on clusters upgraded from older ones) and the
-- app's grants. Idempotent. A DBA who creates the roles after the first migrate runs
-- `SELECT waitroom_setup_roles()` as the database owner, or simply `waitroom migrate`.
CREATE OR REPLACE FUNCTION waitroom_setup_roles() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT waitroom_create_roles() THEN
        RETURN false;
    END IF;
    IF NOT has_schema_privilege('waitroom_owner', current_schema(), 'CREATE') THEN
        EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO waitroom_owner', current_schema());
    END IF;
    IF has_schema_privilege('public', current_schema(), 'CREATE') THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
    END IF;
    PERFORM waitroom_own_schema();
    PERFORM waitroom_grant_app();
    RETURN true;
END
$$;

COMMENT ON FUNCTION waitroom_create_roles() IS
    'Creates the NOLOGIN group roles waitroom_owner and waitroom_app when missing and allowed '
    '(race-safe); true when both exist.';
COMMENT ON FUNCTION waitroom_own_schema() IS
    'Makes waitroom_owner the owner of every table, view, sequence and function of the schema '
    'that the current user may give away; returns how many it moved.';
COMMENT ON FUNCTION waitroom_grant_app() IS
    'Grants waitroom_app its runtime privileges: events SELECT and INSERT only, the working '
    'tables'' rows, the views; no DDL.';
COMMENT ON FUNCTION waitroom_setup_roles() IS
    'Creates waitroom_owner and waitroom_app when missing (and allowed), gives the schema''s '
    'objects to waitroom_owner and grants waitroom_app its runtime privileges. Idempotent.';

SELECT waitroom_setup_roles();
