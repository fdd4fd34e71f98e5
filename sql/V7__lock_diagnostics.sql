-- Whether any session of this database holds the two-key advisory lock (k1, k2).
-- Used for readiness (is there a relay leader?) and rebuilds (is one running?), and by
-- operators: SELECT advisory_lock_held(2002872692, 1919249529) -- the relay leader lock.
CREATE FUNCTION advisory_lock_held(k1 integer, k2 integer) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND granted AND objsubid = 2
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND classid::int = k1 AND objid::int = k2)
$$;
