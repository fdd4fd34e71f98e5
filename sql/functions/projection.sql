-- The generic projection machinery: checkpoints, gaps, parking and lag facts around a
-- projection's set-based apply function (projections.apply_function, e.g. waiting_room_apply).
--
-- The checkpoint rule (docs/ARCHITECTURE.md, invariants 1 and 2): an event is applied only when it is
-- exactly its stream's checkpoint + 1, in the transaction that advances the checkpoint.
-- Deliveries only say "stream S has events up to version V"; the events themselves are read
-- from the store, so duplicates are no-ops and gaps fill themselves.

-- Applies streams one at a time, then events one at a time, each in a subtransaction: the
-- slow path taken when the set-based apply raised an error (a payload it cannot cast, a
-- constraint). Returns the first failing version of each stream that has one.
CREATE OR REPLACE FUNCTION project_streams_one_by_one(p_apply text, p_streams text[],
                                                      p_after integer[], p_to integer[])
RETURNS TABLE (stream_id text, bad_version integer, error text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i integer;
    v integer;
    found_bad integer;
    found_error text;
    apply text := format('SELECT r.bad_version, r.error FROM %I($1, $2, $3) r', p_apply);
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        BEGIN
            found_bad := NULL;
            EXECUTE apply INTO found_bad, found_error
                USING ARRAY[p_streams[i]], ARRAY[p_after[i]], ARRAY[p_to[i]];
            IF found_bad IS NOT NULL THEN
                stream_id := p_streams[i]; bad_version := found_bad; error := found_error;
                RETURN NEXT;
            END IF;
            CONTINUE;
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected OR lock_not_available
                 OR query_canceled OR admin_shutdown THEN
                RAISE;
            WHEN OTHERS THEN
                NULL; -- find the failing event below
        END;
        v := p_after[i];
        WHILE v < p_to[i] LOOP
            BEGIN
                found_bad := NULL;
                EXECUTE apply INTO found_bad, found_error
                    USING ARRAY[p_streams[i]], ARRAY[v], ARRAY[v + 1];
                IF found_bad IS NOT NULL THEN
                    stream_id := p_streams[i]; bad_version := found_bad; error := found_error;
                    RETURN NEXT;
                    EXIT;
                END IF;
                v := v + 1;
            EXCEPTION
                WHEN serialization_failure OR deadlock_detected OR lock_not_available
                     OR query_canceled OR admin_shutdown THEN
                    RAISE;
                WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS found_error = MESSAGE_TEXT;
                    stream_id := p_streams[i]; bad_version := v + 1; error := found_error;
                    RETURN NEXT;
                    EXIT;
            END;
        END LOOP;
    END LOOP;
END
$$;

COMMENT ON FUNCTION project_streams_one_by_one(text, text[], integer[], integer[]) IS
    'Slow path of project_batch: applies each stream, then each event, in a subtransaction to '
    'find the first failing version of each stream. One row per failing stream.';

-- Brings each stream of p_streams up to p_up_to (NULL: the stream's end) for one projection,
-- in one transaction, with one call of the projection's set-based apply function:
--   * streams are locked in stream-id order (competing projectors never deadlock);
--   * parked streams are skipped; duplicates (version <= checkpoint) are no-ops;
--   * events checkpoint+1 .. target are read from the event store (gaps heal themselves);
--   * a stream whose event does not fit is parked with the good prefix applied, others go on;
--   * lag facts are written for every applied event (p_positions/p_published_at: when the
--     relay dispatched the delivered events; events read from the store without a delivery
--     count as published when projected).
-- An error the apply function did not foresee (a payload it cannot cast, a constraint) fails
-- the whole call; the caller then calls again with p_isolate, which applies stream by stream
-- and event by event in subtransactions to park exactly the failing stream. (Subtransactions
-- cost on every call; the fast path has none.)
-- Read models are derived data: the transaction commits asynchronously (a crash of Postgres
-- can lose the last few milliseconds of projection, never events, and the projector's
-- catch-up at start re-applies them). Returns one row per distinct requested stream.
DROP FUNCTION IF EXISTS project_batch(text, text[], integer[], bigint[], timestamptz[]);
CREATE OR REPLACE FUNCTION project_batch(p_projection text, p_streams text[], p_up_to integer[],
                                         p_positions bigint[] DEFAULT NULL,
                                         p_published_at timestamptz[] DEFAULT NULL,
                                         p_isolate boolean DEFAULT false)
RETURNS TABLE (stream_id text, applied integer, parked boolean, error text, newly_parked boolean,
               lag_ms double precision[])
LANGUAGE plpgsql
-- A batch touches a few rows per stream, by key: every table here and in the apply function
-- is reached through its index, from a LATERAL subquery on the key or an array of keys, so
-- the plan cannot depend on table sizes or statistics (a plan made on small tables used to
-- scan whole tables once they had grown, and autovacuum may be off). That makes one cached
-- generic plan per session right for every batch, and planning these statements cost more
-- than running them for a few events. Nothing here wants a sequential scan, a hash or merge
-- join or JIT; a rebuild's slices of 20,000 events sort in memory with 64 MB.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
SET work_mem = '64MB'
AS $$
#variable_conflict use_column
DECLARE
    proj projections;
    s text[];       -- streams with work, in stream-id order
    a integer[];    -- their checkpoints
    z integer[];    -- their targets
    bs text[];      -- streams whose event failed
    bv integer[];   -- the failing version
    be text[];      -- the error
    t timestamptz;
    changed text;   -- the board notification's payload
BEGIN
    SELECT * INTO proj FROM projections WHERE name = p_projection;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown projection %', p_projection USING ERRCODE = 'undefined_object';
    END IF;
    -- Shared with every live apply; a rebuild takes it exclusively.
    PERFORM pg_advisory_xact_lock_shared(hashtext('waitroom.projection'), hashtext(p_projection)),
            set_config('synchronous_commit', 'off', true);

    -- (OFFSET 0 keeps the NOT EXISTS a keyed lookup per stream; as an anti-join it read
    -- every checkpoint of the projection, a cost that grew with the number of queues.)
    INSERT INTO projection_checkpoints (projection, stream_id)
    SELECT p_projection, x FROM unnest(p_streams) AS x
     WHERE NOT EXISTS (SELECT 1 FROM projection_checkpoints c
                        WHERE c.projection = p_projection AND c.stream_id = x OFFSET 0)
     ORDER BY x
        ON CONFLICT DO NOTHING;

    -- Lock the streams in stream-id order, so competing projectors never deadlock (two
    -- stream ids with colliding hashes could still; Postgres detects it, the batch fails as
    -- transient and is retried). Advisory locks, not row locks: a row lock is a heap write.
    PERFORM pg_advisory_xact_lock(hashtext('waitroom.checkpoint/' || p_projection), hashtext(x))
       FROM (SELECT DISTINCT x FROM unnest(p_streams) AS x ORDER BY x) s;

    SELECT array_agg(w.sid ORDER BY w.sid), array_agg(w.last_version ORDER BY w.sid),
           array_agg(w.target ORDER BY w.sid)
      INTO s, a, z
      FROM (SELECT r.sid, c.last_version, least(coalesce(r.up_to, m.top), m.top) AS target
              FROM (SELECT x.sid, max(x.up_to) AS up_to
                      FROM unnest(p_streams, p_up_to) AS x(sid, up_to)
                     GROUP BY x.sid) r
             CROSS JOIN LATERAL (SELECT c.last_version, c.status FROM projection_checkpoints c
                                  WHERE c.projection = p_projection AND c.stream_id = r.sid
                                 OFFSET 0) c
             CROSS JOIN LATERAL (SELECT max(e.version) AS top FROM waiting_room_events e
                                  WHERE e.stream_id = r.sid) m
             WHERE c.status = 'ACTIVE') w
     WHERE w.target > w.last_version;

    IF s IS NOT NULL THEN
        IF p_isolate THEN
            SELECT array_agg(r.stream_id), array_agg(r.bad_version), array_agg(r.error)
              INTO bs, bv, be
              FROM project_streams_one_by_one(proj.apply_function, s, a, z) r;
        ELSIF proj.apply_function = 'waiting_room_apply' THEN
            -- Called statically, so its plan is cached too.
            SELECT array_agg(r.stream_id), array_agg(r.bad_version), array_agg(r.error)
              INTO bs, bv, be
              FROM waiting_room_apply(s, a, z) r;
        ELSE
            EXECUTE format('SELECT array_agg(r.stream_id), array_agg(r.bad_version), array_agg(r.error) '
                           'FROM %I($1, $2, $3) r', proj.apply_function)
               INTO bs, bv, be USING s, a, z;
        END IF;
    END IF;

    -- The live board (src/board): one NOTIFY per batch, payload the JSON array of the streams
    -- (queue ids) that had work, or '*' past NOTIFY's 8000-byte payload limit. NOTIFY takes
    -- a database-wide lock at commit (docs/ARCHITECTURE.md, invariant 4), so it is sent only
    -- while a board listener holds the board lock in shared mode (it does while pages are
    -- open): the exclusive try-lock below succeeds exactly when none does. It is held to
    -- commit, so a listener arming itself waits for this batch, then resyncs its pages. A
    -- rebuild is quiet here and notifies '*' once (reset_projection).
    IF s IS NOT NULL AND coalesce(current_setting('waitroom.board_quiet', true), '') <> 'on' THEN
        IF NOT pg_try_advisory_xact_lock(hashtext('waitroom.board'), hashtext(p_projection)) THEN
            changed := array_to_json(s)::text;
            PERFORM pg_notify('waitroom_board', CASE WHEN octet_length(changed) < 8000
                                                     THEN changed ELSE '*' END);
        END IF;
    END IF;

    t := clock_timestamp();
    RETURN QUERY
    WITH work AS (
        SELECT w.sid, w.after_v, coalesce(b.bad_v - 1, w.to_v) AS good_v, b.bad_v, b.err
          FROM unnest(s, a, z) AS w(sid, after_v, to_v)
          LEFT JOIN unnest(bs, bv, be) AS b(sid, bad_v, err) ON b.sid = w.sid
    ), keyed AS (
        -- Each stream's checkpoint row, looked up by key, then updated by its row address:
        -- joined by stream id instead, the planner scanned every checkpoint of the
        -- projection and compared each with every stream of the batch. The rows cannot move
        -- in between: only holders of the streams' advisory locks (taken above) update them.
        SELECT w.*, k.ctid AS row_at
          FROM work w
         CROSS JOIN LATERAL (SELECT c.ctid FROM projection_checkpoints c
                              WHERE c.projection = p_projection AND c.stream_id = w.sid
                             OFFSET 0) k
    ), checkpoints AS (
        UPDATE projection_checkpoints c
           SET last_version = w.good_v,
               events_applied = c.events_applied + (w.good_v - w.after_v),
               status = CASE WHEN w.err IS NULL THEN 'ACTIVE' ELSE 'PARKED' END,
               parked_version = w.bad_v,
               last_error = w.err,
               parked_at = CASE WHEN w.err IS NULL THEN NULL ELSE t END,
               updated_at = t
          FROM keyed w
         WHERE c.ctid = w.row_at
    ), applied AS (
        -- The dispatch time of the event's (first) delivery, found in the arrays: a join
        -- with them compared every event with every delivery.
        SELECT e.event_id, e.global_position, e.stream_id, e.version, e.event_type, e.recorded_at,
               least(coalesce(p_published_at[array_position(p_positions, e.global_position)], t), t)
                   AS published_at,
               x.status AS fact
          FROM work w
         CROSS JOIN LATERAL (SELECT e.* FROM waiting_room_events e
                              WHERE e.stream_id = w.sid AND e.version > w.after_v
                                AND e.version <= w.good_v
                             OFFSET 0) e
          LEFT JOIN LATERAL (SELECT x.status FROM event_lag_facts x
                              WHERE x.event_id = e.event_id OFFSET 0) x ON true
         WHERE proj.tracks_lag
    ), inserted AS (
        -- A plain insert: the usual case, no fact yet (a rebuild keeps the facts it finds).
        INSERT INTO event_lag_facts AS f
               (event_id, global_position, stream_id, version, event_type, event_created_at,
                event_published_at, projection_processed_at, status)
        SELECT ap.event_id, ap.global_position, ap.stream_id, ap.version, ap.event_type,
               ap.recorded_at, ap.published_at, t, 'PROCESSED'
          FROM applied ap
         WHERE ap.fact IS NULL
        RETURNING f.stream_id AS sid, f.total_lag_ms AS ms
    ), recovered AS (
        -- Events that failed before and are applied now (after a fix and a rebuild).
        UPDATE event_lag_facts f
           SET event_published_at = ap.published_at, projection_processed_at = t,
               status = 'PROCESSED', failure_reason = NULL
          FROM applied ap
         WHERE ap.fact = 'FAILED' AND f.event_id = ap.event_id
           AND f.event_id = ANY (ARRAY(SELECT a2.event_id FROM applied a2 WHERE a2.fact = 'FAILED'))
        RETURNING f.stream_id AS sid, f.total_lag_ms AS ms
    ), failed AS (
        INSERT INTO event_lag_facts AS f
               (event_id, global_position, stream_id, version, event_type, event_created_at,
                status, failure_reason)
        SELECT e.event_id, e.global_position, e.stream_id, e.version, e.event_type, e.recorded_at,
               'FAILED', w.err
          FROM work w
         CROSS JOIN LATERAL (SELECT e.* FROM waiting_room_events e
                              WHERE e.stream_id = w.sid AND e.version = w.bad_v OFFSET 0) e
         WHERE proj.tracks_lag
        ON CONFLICT (event_id) DO UPDATE
           SET status = 'FAILED', failure_reason = EXCLUDED.failure_reason
         WHERE f.status <> 'PROCESSED'
    ), lags AS (
        SELECT d.sid, array_agg(d.ms) AS ms
          FROM (SELECT * FROM inserted UNION ALL SELECT * FROM recovered) d
         GROUP BY d.sid
    )
    -- Checkpoints as they were before this statement: a stream with work was active.
    SELECT r.sid,
           coalesce(w.good_v - w.after_v, 0),
           w.err IS NOT NULL OR (w.sid IS NULL AND coalesce(c.status = 'PARKED', false)),
           coalesce(w.err, CASE WHEN w.sid IS NULL AND c.status = 'PARKED' THEN c.last_error END),
           w.err IS NOT NULL,
           coalesce(l.ms, ARRAY[]::double precision[])
      FROM (SELECT DISTINCT x AS sid FROM unnest(p_streams) AS x) r
      LEFT JOIN work w ON w.sid = r.sid
      LEFT JOIN lags l ON l.sid = r.sid
      LEFT JOIN LATERAL (SELECT c.status, c.last_error FROM projection_checkpoints c
                          WHERE c.projection = p_projection AND c.stream_id = r.sid
                         OFFSET 0) c ON true
     ORDER BY r.sid;
END
$$;

COMMENT ON FUNCTION project_batch(text, text[], integer[], bigint[], timestamptz[], boolean) IS
    'Applies a batch of streams to a projection in one transaction: checkpoints, gap filling '
    'from the store, parking of failing streams, lag facts. One row per stream.';

-- Streams whose checkpoint trails the store (never projected ones included), parked ones
-- excluded: what a projector catches up on at start.
CREATE OR REPLACE FUNCTION streams_behind(p_projection text)
RETURNS TABLE (stream_id text, behind integer)
LANGUAGE sql STABLE AS $$
    SELECT s.stream_id, m.top - coalesce(c.last_version, 0)
      FROM waiting_room_snapshots s
     CROSS JOIN LATERAL (SELECT max(e.version) AS top FROM waiting_room_events e
                          WHERE e.stream_id = s.stream_id) m
      LEFT JOIN projection_checkpoints c ON c.projection = p_projection AND c.stream_id = s.stream_id
     WHERE coalesce(c.last_version, 0) < m.top AND coalesce(c.status, 'ACTIVE') = 'ACTIVE'
     ORDER BY s.stream_id
$$;

COMMENT ON FUNCTION streams_behind(text) IS
    'Active streams whose projection checkpoint is behind the event store, and by how many events.';

-- Empties a projection's read models and checkpoints, for a rebuild. Call it inside the
-- rebuild's transaction after taking the projection's exclusive advisory lock. DELETE, not
-- TRUNCATE: readers keep seeing the old rows until the rebuild commits.
CREATE OR REPLACE FUNCTION reset_projection(p_projection text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT unnest(read_models) FROM projections WHERE name = p_projection LOOP
        EXECUTE format('DELETE FROM %I', t);
    END LOOP;
    DELETE FROM projection_checkpoints WHERE projection = p_projection;
    -- Every queue changes: one '*' to the live board at commit, and project_batch stays
    -- quiet for the rest of this transaction (no lock or notification per slice).
    PERFORM set_config('waitroom.board_quiet', 'on', true),
            pg_notify('waitroom_board', '*');
END
$$;

COMMENT ON FUNCTION reset_projection(text) IS
    'Deletes a projection''s read models and checkpoints (inside a rebuild transaction) and '
    'tells the live board that every queue changed.';
