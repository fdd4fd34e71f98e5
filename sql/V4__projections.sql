-- Read models and the SQL functions that project events into them.

-- Registered projections: the function that applies one event, the tables it owns
-- (cleared by a rebuild) and whether it records lag "processed" facts.
CREATE TABLE projections (
    name           text     PRIMARY KEY,
    apply_function regproc  NOT NULL,
    read_models    text[]   NOT NULL,
    tracks_lag     boolean  NOT NULL DEFAULT false
);

-- Per (projection, stream): the last applied version. An event is applied only when it
-- is exactly last_version + 1, in the transaction that advances the checkpoint.
CREATE TABLE projection_checkpoints (
    projection     text        NOT NULL REFERENCES projections (name),
    stream_id      text        NOT NULL,
    last_version   integer     NOT NULL DEFAULT 0,
    events_applied bigint      NOT NULL DEFAULT 0,
    status         text        NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'PARKED')),
    parked_version integer,
    last_error     text,
    parked_at      timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projection, stream_id)
);

CREATE INDEX projection_checkpoints_parked ON projection_checkpoints (projection) WHERE status = 'PARKED';

CREATE TABLE waiting_queue_view (
    queue_id                 text        PRIMARY KEY,
    queue_name               text        NOT NULL,
    max_capacity             integer     NOT NULL,
    max_no_shows             integer     NOT NULL,
    current_patient_count    integer     NOT NULL DEFAULT 0,
    waiting_count            integer     NOT NULL DEFAULT 0,
    called_count             integer     NOT NULL DEFAULT 0,
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL,
    updated_by_event_version integer     NOT NULL
);

CREATE TABLE waiting_patients_view (
    queue_id                 text        NOT NULL,
    patient_id               text        NOT NULL,
    patient_name             text        NOT NULL,
    priority                 text        NOT NULL,
    priority_rank            smallint    NOT NULL,
    consultation_type        text        NOT NULL,
    notes                    text,
    status                   text        NOT NULL,
    -- 1-based place in call order among WAITING patients; NULL for everyone else.
    position_in_queue        integer,
    queued_at                timestamptz NOT NULL,
    queue_seq                integer     NOT NULL,
    no_show_count            integer     NOT NULL DEFAULT 0,
    checked_in_at            timestamptz NOT NULL,
    called_at                timestamptz,
    consulting_room          text,
    completed_at             timestamptz,
    finished_at              timestamptz,
    updated_by_event_version integer     NOT NULL,
    PRIMARY KEY (queue_id, patient_id)
);

CREATE INDEX waiting_patients_view_active ON waiting_patients_view (queue_id, status);

CREATE FUNCTION priority_rank(p text) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE p WHEN 'Low' THEN 1 WHEN 'Medium' THEN 2 WHEN 'High' THEN 3 WHEN 'Urgent' THEN 4 END::smallint
$$;

-- Recomputes positions (touching only rows whose place changed) and the queue's counts.
CREATE FUNCTION refresh_waiting_queue(q text, v integer, at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE waiting_patients_view p
       SET position_in_queue = r.pos
      FROM (SELECT patient_id,
                   row_number() OVER (ORDER BY priority_rank DESC, queued_at, queue_seq)::integer AS pos
              FROM waiting_patients_view
             WHERE queue_id = q AND status = 'WAITING') r
     WHERE p.queue_id = q AND p.patient_id = r.patient_id
       AND p.position_in_queue IS DISTINCT FROM r.pos;

    UPDATE waiting_queue_view w
       SET current_patient_count = c.waiting + c.called,
           waiting_count = c.waiting,
           called_count = c.called,
           updated_at = at,
           updated_by_event_version = v
      FROM (SELECT count(*) FILTER (WHERE status = 'WAITING')::integer AS waiting,
                   count(*) FILTER (WHERE status = 'CALLED')::integer AS called
              FROM waiting_patients_view
             WHERE queue_id = q AND status IN ('WAITING', 'CALLED')) c
     WHERE w.queue_id = q;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'queue % is not in waiting_queue_view', q USING ERRCODE = 'data_exception';
    END IF;
END
$$;

-- Applies one event to waiting_queue_view / waiting_patients_view. Raises on anything
-- inconsistent, which parks the stream instead of writing a wrong read model.
CREATE FUNCTION project_waiting_room(e waiting_room_events) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    d jsonb := e.payload;
    q text := e.stream_id;
    p text := d ->> 'patientId';
BEGIN
    CASE e.event_type
    WHEN 'WaitingQueueCreated' THEN
        INSERT INTO waiting_queue_view (queue_id, queue_name, max_capacity, max_no_shows,
                                        created_at, updated_at, updated_by_event_version)
        VALUES (q, d ->> 'name', (d ->> 'maxCapacity')::integer, (d ->> 'maxNoShows')::integer,
                (d ->> 'createdAt')::timestamptz, (d ->> 'createdAt')::timestamptz, e.version);
        RETURN;
    WHEN 'PatientCheckedIn' THEN
        INSERT INTO waiting_patients_view AS v
               (queue_id, patient_id, patient_name, priority, priority_rank, consultation_type, notes,
                status, queued_at, queue_seq, checked_in_at, updated_by_event_version)
        VALUES (q, p, d ->> 'patientName', d ->> 'priority', priority_rank(d ->> 'priority'),
                d ->> 'consultationType', d ->> 'notes', 'WAITING', (d ->> 'checkedInAt')::timestamptz,
                e.version, (d ->> 'checkedInAt')::timestamptz, e.version)
        ON CONFLICT (queue_id, patient_id) DO UPDATE
           SET patient_name = EXCLUDED.patient_name,
               priority = EXCLUDED.priority,
               priority_rank = EXCLUDED.priority_rank,
               consultation_type = EXCLUDED.consultation_type,
               notes = EXCLUDED.notes,
               status = 'WAITING',
               position_in_queue = NULL,
               queued_at = EXCLUDED.queued_at,
               queue_seq = EXCLUDED.queue_seq,
               no_show_count = 0,
               checked_in_at = EXCLUDED.checked_in_at,
               called_at = NULL,
               consulting_room = NULL,
               completed_at = NULL,
               finished_at = NULL,
               updated_by_event_version = EXCLUDED.updated_by_event_version
         WHERE v.status NOT IN ('WAITING', 'CALLED');
    WHEN 'PatientCalled' THEN
        UPDATE waiting_patients_view
           SET status = 'CALLED', position_in_queue = NULL,
               called_at = (d ->> 'calledAt')::timestamptz,
               consulting_room = d ->> 'consultingRoom',
               updated_by_event_version = e.version
         WHERE queue_id = q AND patient_id = p AND status = 'WAITING';
    WHEN 'PatientConsultationCompleted' THEN
        UPDATE waiting_patients_view
           SET status = 'COMPLETED', position_in_queue = NULL,
               completed_at = (d ->> 'completedAt')::timestamptz,
               finished_at = (d ->> 'completedAt')::timestamptz,
               updated_by_event_version = e.version
         WHERE queue_id = q AND patient_id = p AND status = 'CALLED';
    WHEN 'PatientMarkedNoShow' THEN
        UPDATE waiting_patients_view
           SET status = d ->> 'status',
               position_in_queue = NULL,
               no_show_count = (d ->> 'noShowCount')::integer,
               queued_at = CASE WHEN d ->> 'status' = 'WAITING'
                                THEN (d ->> 'markedAt')::timestamptz ELSE queued_at END,
               queue_seq = CASE WHEN d ->> 'status' = 'WAITING' THEN e.version ELSE queue_seq END,
               called_at = CASE WHEN d ->> 'status' = 'WAITING' THEN NULL ELSE called_at END,
               consulting_room = CASE WHEN d ->> 'status' = 'WAITING' THEN NULL ELSE consulting_room END,
               finished_at = CASE WHEN d ->> 'status' = 'NO_SHOW'
                                  THEN (d ->> 'markedAt')::timestamptz END,
               updated_by_event_version = e.version
         WHERE queue_id = q AND patient_id = p AND status = 'CALLED'
           AND d ->> 'status' IN ('WAITING', 'NO_SHOW');
    WHEN 'PatientCheckInCancelled' THEN
        UPDATE waiting_patients_view
           SET status = 'CANCELLED', position_in_queue = NULL,
               finished_at = (d ->> 'cancelledAt')::timestamptz,
               updated_by_event_version = e.version
         WHERE queue_id = q AND patient_id = p AND status IN ('WAITING', 'CALLED');
    ELSE
        RAISE EXCEPTION 'project_waiting_room: unknown event type %', e.event_type
            USING ERRCODE = 'data_exception';
    END CASE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project_waiting_room: % v% does not fit patient % of queue %',
            e.event_type, e.version, p, q USING ERRCODE = 'data_exception';
    END IF;
    PERFORM refresh_waiting_queue(q, e.version, e.occurred_at);
END
$$;

INSERT INTO projections (name, apply_function, read_models, tracks_lag)
VALUES ('waiting_room', 'project_waiting_room', ARRAY['waiting_queue_view', 'waiting_patients_view'], true);

-- Applies events (from_version, to_version] of one stream, in order, from the event store.
CREATE FUNCTION apply_stream_range(p_projection text, p_stream_id text, from_version integer,
                                   to_version integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    fn regproc := (SELECT apply_function FROM projections WHERE name = p_projection);
    ev waiting_room_events;
BEGIN
    FOR ev IN SELECT * FROM waiting_room_events
               WHERE stream_id = p_stream_id AND version > from_version AND version <= to_version
               ORDER BY version
    LOOP
        EXECUTE format('SELECT %s($1)', fn) USING ev;
    END LOOP;
END
$$;

-- Brings one stream's projection up to p_up_to (or the stream's end when NULL).
-- Duplicates (already applied) are no-ops; gaps are filled from the event store;
-- a failing event parks the stream with its error after applying the good prefix.
-- Transient errors (deadlock, serialization, cancel) are re-raised, never parked.
-- Returns what happened (error is set only when this call parked the stream), plus the
-- end-to-end lag of events newly marked PROCESSED.
CREATE FUNCTION project_stream(p_projection text, p_stream_id text, p_up_to integer DEFAULT NULL)
RETURNS TABLE (applied integer, parked boolean, error text, lag_ms double precision[])
LANGUAGE plpgsql AS $$
DECLARE
    cp projection_checkpoints;
    target integer;
    good integer;
    bad integer;
    err text;
    tracks boolean;
    t timestamptz;
    lags double precision[];
BEGIN
    SELECT tracks_lag INTO tracks FROM projections WHERE name = p_projection;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown projection %', p_projection USING ERRCODE = 'undefined_object';
    END IF;
    -- Shared with every live apply; a rebuild takes it exclusively.
    PERFORM pg_advisory_xact_lock_shared(hashtext('waitroom.projection'), hashtext(p_projection));

    INSERT INTO projection_checkpoints (projection, stream_id) VALUES (p_projection, p_stream_id)
        ON CONFLICT DO NOTHING;
    SELECT * INTO cp FROM projection_checkpoints
     WHERE projection = p_projection AND stream_id = p_stream_id FOR UPDATE;
    IF cp.status = 'PARKED' THEN
        -- error is NULL: it was parked earlier (projection_checkpoints.last_error has why).
        RETURN QUERY SELECT 0, true, NULL::text, ARRAY[]::double precision[];
        RETURN;
    END IF;

    target := coalesce(p_up_to,
                       (SELECT max(version) FROM waiting_room_events WHERE stream_id = p_stream_id), 0);
    target := least(target,
                    coalesce((SELECT max(version) FROM waiting_room_events WHERE stream_id = p_stream_id), 0));
    IF target <= cp.last_version THEN
        RETURN QUERY SELECT 0, false, NULL::text, ARRAY[]::double precision[];
        RETURN;
    END IF;

    -- Fast path: the whole range in one subtransaction.
    good := target;
    BEGIN
        PERFORM apply_stream_range(p_projection, p_stream_id, cp.last_version, target);
    EXCEPTION
        WHEN serialization_failure OR deadlock_detected OR lock_not_available
             OR query_canceled OR admin_shutdown THEN
            RAISE;
        WHEN OTHERS THEN
            good := NULL;
    END;
    IF good IS NULL THEN
        -- Slow path (rare): one event per subtransaction, to keep the good prefix and
        -- find the event that fails.
        good := cp.last_version;
        WHILE good < target LOOP
            BEGIN
                PERFORM apply_stream_range(p_projection, p_stream_id, good, good + 1);
                good := good + 1;
            EXCEPTION
                WHEN serialization_failure OR deadlock_detected OR lock_not_available
                     OR query_canceled OR admin_shutdown THEN
                    RAISE;
                WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                    bad := good + 1;
                    EXIT;
            END;
        END LOOP;
    END IF;

    t := clock_timestamp();
    UPDATE projection_checkpoints
       SET last_version = good,
           events_applied = events_applied + (good - cp.last_version),
           status = CASE WHEN err IS NULL THEN 'ACTIVE' ELSE 'PARKED' END,
           parked_version = bad,
           last_error = err,
           parked_at = CASE WHEN err IS NULL THEN NULL ELSE t END,
           updated_at = t
     WHERE projection = p_projection AND stream_id = p_stream_id;

    IF tracks THEN
        WITH done AS (
            UPDATE event_processing_lag
               SET projection_processed_at = t,
                   -- The projector can commit before the relay marks the batch published;
                   -- the event was surely published by now.
                   event_published_at = coalesce(event_published_at, t),
                   status = 'PROCESSED',
                   failure_reason = NULL
             WHERE stream_id = p_stream_id AND version > cp.last_version AND version <= good
               AND status <> 'PROCESSED'
            RETURNING total_lag_ms)
        SELECT array_agg(total_lag_ms) INTO lags FROM done;
        IF err IS NOT NULL THEN
            UPDATE event_processing_lag SET status = 'FAILED', failure_reason = err
             WHERE stream_id = p_stream_id AND version = bad AND status <> 'PROCESSED';
        END IF;
    END IF;

    RETURN QUERY SELECT good - cp.last_version, err IS NOT NULL, err,
                        coalesce(lags, ARRAY[]::double precision[]);
END
$$;

-- Empties a projection's read models and checkpoints, for a rebuild. Call it inside the
-- rebuild's transaction after taking the projection's exclusive advisory lock.
CREATE FUNCTION reset_projection(p_projection text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT unnest(read_models) FROM projections WHERE name = p_projection LOOP
        EXECUTE format('DELETE FROM %I', t);
    END LOOP;
    DELETE FROM projection_checkpoints WHERE projection = p_projection;
END
$$;
