-- The waiting-room read model: applies a batch of events to waiting_queue_view and
-- waiting_patients in ONE statement, whatever the number of events or streams.
--
-- The rules mirror the Rust domain (src/domain/queue.rs), which owns them; the property
-- test tests/pipeline/model.rs checks that both agree on statuses and positions.

-- Not STRICT: a strict SQL function is not inlined, and called once per row it cost more
-- than the rest of a batch. The CASE gives NULL for NULL anyway.
CREATE OR REPLACE FUNCTION priority_rank(p text) RETURNS smallint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p WHEN 'Low' THEN 1 WHEN 'Medium' THEN 2 WHEN 'High' THEN 3 WHEN 'Urgent' THEN 4 END::smallint
$$;

COMMENT ON FUNCTION priority_rank(text) IS 'Low 1 < Medium 2 < High 3 < Urgent 4; NULL for anything else.';

-- Applies events (p_after[i], p_to[i]] of stream p_streams[i] for every i, which the caller
-- (project_batch) has locked. Each event is checked against the status its patient had
-- before it (the previous event of the batch, else the stored row); a stream whose event
-- does not fit is applied up to the event before it and reported, nothing after it is
-- written. Returns one row per such stream.
--
-- How a batch folds into one row per patient: every event sets the status; a check-in sets
-- everything; each other column keeps the value of the LAST event in the batch that sets it
-- (a no-show back to WAITING re-queues and clears the room, a call sets the room, ...), else
-- the stored value. Queue counters move by the status changes of the batch.
--
-- "The last event that sets it" is read as the last element of an array_agg fed in
-- (queue, patient, version) order: ORDER BY inside each of a dozen aggregates would sort
-- every patient's events a dozen times. Aggregates take their input in the order rows
-- arrive, and a statement that writes is never run in parallel, so the order holds.
CREATE OR REPLACE FUNCTION waiting_room_apply(p_streams text[], p_after integer[], p_to integer[])
RETURNS TABLE (stream_id text, bad_version integer, error text)
LANGUAGE plpgsql
-- Planner settings come from the caller, project_batch (see there): every table is reached
-- through its key, from a LATERAL subquery or an array of keys, so one generic plan per
-- session serves batches of any size.
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH ev AS (
        SELECT e.stream_id AS q, e.version AS v, e.event_type AS t, e.occurred_at AS at,
               -- Straight from the payload (not from x): the planner can then look the
               -- patient up by both key columns.
               e.payload ->> 'patientId' AS p, x.*,
               CASE e.event_type
                   WHEN 'PatientCheckedIn' THEN 'WAITING'
                   WHEN 'PatientCalled' THEN 'CALLED'
                   WHEN 'PatientConsultationCompleted' THEN 'COMPLETED'
                   WHEN 'PatientMarkedNoShow' THEN x.status
                   WHEN 'PatientCheckInCancelled' THEN 'CANCELLED'
               END AS st
          FROM unnest(p_streams, p_after, p_to) AS r(q, after_v, to_v)
         CROSS JOIN LATERAL (SELECT e.* FROM waiting_room_events e
                              WHERE e.stream_id = r.q AND e.version > r.after_v
                                AND e.version <= r.to_v
                             OFFSET 0) e
         -- Every field as text: the few an event type uses are converted in `good`.
         CROSS JOIN LATERAL jsonb_to_record(e.payload) AS x(
               status text, "patientName" text, priority text,
               "consultationType" text, notes text, "checkedInAt" text,
               "calledAt" text, "consultingRoom" text, "completedAt" text,
               "markedAt" text, "noShowCount" text, "cancelledAt" text,
               name text, "maxCapacity" text, "maxNoShows" text, "createdAt" text)
    ), judged AS (
        SELECT ev.*,
               -- The status before this event: the batch's previous event for this patient,
               -- else the stored row. (An earlier event with no status is a bad one, and
               -- nothing after a bad event is applied.)
               coalesce(lag(ev.st) OVER patient, wp.status) AS before,
               qv.queue_id IS NOT NULL
                 OR min(ev.v) FILTER (WHERE ev.t = 'WaitingQueueCreated') OVER queue < ev.v AS queue_exists
          FROM ev
          LEFT JOIN LATERAL (SELECT wp.status FROM waiting_patients wp
                              WHERE wp.queue_id = ev.q AND wp.patient_id = ev.p OFFSET 0) wp ON true
          LEFT JOIN LATERAL (SELECT qv.queue_id FROM waiting_queue_view qv
                              WHERE qv.queue_id = ev.q OFFSET 0) qv ON true
        WINDOW patient AS (PARTITION BY ev.q, ev.p ORDER BY ev.v),
               queue AS (PARTITION BY ev.q)
    ), checked AS (
        SELECT j.*,
               CASE
                   WHEN j.t = 'WaitingQueueCreated' THEN
                       CASE WHEN j.queue_exists THEN 'the queue exists already'
                            WHEN j.name IS NULL OR j."maxCapacity" IS NULL OR j."maxNoShows" IS NULL
                                 OR j."createdAt" IS NULL
                                THEN 'name, maxCapacity, maxNoShows and createdAt are required'
                       END
                   WHEN j.st IS NULL AND j.t <> 'PatientMarkedNoShow' THEN 'unknown event type'
                   WHEN NOT coalesce(j.queue_exists, false) THEN 'the queue is not in waiting_queue_view'
                   WHEN j.p IS NULL THEN 'patientId is required'
                   WHEN j.t = 'PatientCheckedIn' THEN
                       CASE WHEN j.before IN ('WAITING', 'CALLED') THEN 'the patient is ' || j.before
                            WHEN j."patientName" IS NULL OR priority_rank(j.priority) IS NULL
                                 OR j."consultationType" IS NULL OR j."checkedInAt" IS NULL
                                THEN 'patientName, priority, consultationType and checkedInAt are required'
                       END
                   WHEN j.t = 'PatientCalled' THEN
                       CASE WHEN j.before IS DISTINCT FROM 'WAITING' THEN 'the patient is not WAITING'
                            WHEN j."calledAt" IS NULL OR j."consultingRoom" IS NULL
                                THEN 'calledAt and consultingRoom are required'
                       END
                   WHEN j.t = 'PatientConsultationCompleted' THEN
                       CASE WHEN j.before IS DISTINCT FROM 'CALLED' THEN 'the patient is not CALLED'
                            WHEN j."completedAt" IS NULL THEN 'completedAt is required'
                       END
                   WHEN j.t = 'PatientMarkedNoShow' THEN
                       CASE WHEN j.before IS DISTINCT FROM 'CALLED' THEN 'the patient is not CALLED'
                            WHEN j.st IS NULL OR j.st NOT IN ('WAITING', 'NO_SHOW')
                                THEN 'status must be WAITING or NO_SHOW'
                            WHEN j."noShowCount" IS NULL OR j."markedAt" IS NULL
                                THEN 'noShowCount and markedAt are required'
                       END
                   WHEN j.t = 'PatientCheckInCancelled' THEN
                       CASE WHEN j.before IS NULL OR j.before NOT IN ('WAITING', 'CALLED')
                                THEN 'the patient is neither WAITING nor CALLED'
                            WHEN j."cancelledAt" IS NULL THEN 'cancelledAt is required'
                       END
               END AS problem
          FROM judged j
    ), flagged AS (
        SELECT c.*, min(c.v) FILTER (WHERE c.problem IS NOT NULL) OVER (PARTITION BY c.q) AS bad_v
          FROM checked c
    ), good AS (
        SELECT f.q, f.v, f.t, f.at, f.p, f.st, f.before, f.name,
               CASE WHEN f.t = 'WaitingQueueCreated' THEN f."maxCapacity"::integer END AS "maxCapacity",
               CASE WHEN f.t = 'WaitingQueueCreated' THEN f."maxNoShows"::integer END AS "maxNoShows",
               CASE WHEN f.t = 'WaitingQueueCreated' THEN f."createdAt"::timestamptz END AS "createdAt",
               f."patientName", f.priority, f."consultationType", f.notes,
               CASE WHEN f.t = 'PatientCheckedIn' THEN f."checkedInAt"::timestamptz END AS "checkedInAt",
               f.t = 'PatientCheckedIn' OR (f.t = 'PatientMarkedNoShow' AND f.st = 'WAITING') AS requeues,
               CASE WHEN f.t = 'PatientCheckedIn' THEN f."checkedInAt"::timestamptz
                    WHEN f.t = 'PatientMarkedNoShow' AND f.st = 'WAITING' THEN f."markedAt"::timestamptz
               END AS queued_at,
               f.t IN ('PatientCheckedIn', 'PatientMarkedNoShow') AS counts_no_shows,
               CASE WHEN f.t = 'PatientMarkedNoShow' THEN f."noShowCount"::integer ELSE 0 END AS no_show_count,
               f.t IN ('PatientCheckedIn', 'PatientCalled')
                 OR (f.t = 'PatientMarkedNoShow' AND f.st = 'WAITING') AS sets_call,
               CASE WHEN f.t = 'PatientCalled' THEN f."calledAt"::timestamptz END AS called_at,
               CASE WHEN f.t = 'PatientCalled' THEN f."consultingRoom" END AS consulting_room,
               f.t IN ('PatientCheckedIn', 'PatientConsultationCompleted') AS sets_completed,
               CASE WHEN f.t = 'PatientConsultationCompleted' THEN f."completedAt"::timestamptz END
                   AS completed_at,
               f.t <> 'PatientCalled' AS sets_finished,
               CASE f.t WHEN 'PatientConsultationCompleted' THEN f."completedAt"::timestamptz
                        WHEN 'PatientMarkedNoShow' THEN
                            CASE WHEN f.st = 'NO_SHOW' THEN f."markedAt"::timestamptz END
                        WHEN 'PatientCheckInCancelled' THEN f."cancelledAt"::timestamptz
               END AS finished_at
          FROM flagged f
         WHERE f.bad_v IS NULL OR f.v < f.bad_v
    ), folded AS (
        -- Input in (queue, patient, version) order; x[count(*) FILTER (WHERE c)] is the last
        -- value among the rows where c holds.
        SELECT g.q, g.p, max(g.v) AS last_v,
               (array_agg(g.st))[count(*)] AS st,
               count(*) FILTER (WHERE g.t = 'PatientCheckedIn') > 0 AS checked_in,
               (array_agg(g."patientName") FILTER (WHERE g.t = 'PatientCheckedIn'))
                   [count(*) FILTER (WHERE g.t = 'PatientCheckedIn')] AS patient_name,
               (array_agg(g.priority) FILTER (WHERE g.t = 'PatientCheckedIn'))
                   [count(*) FILTER (WHERE g.t = 'PatientCheckedIn')] AS priority,
               (array_agg(g."consultationType") FILTER (WHERE g.t = 'PatientCheckedIn'))
                   [count(*) FILTER (WHERE g.t = 'PatientCheckedIn')] AS consultation_type,
               (array_agg(g.notes) FILTER (WHERE g.t = 'PatientCheckedIn'))
                   [count(*) FILTER (WHERE g.t = 'PatientCheckedIn')] AS notes,
               (array_agg(g."checkedInAt") FILTER (WHERE g.t = 'PatientCheckedIn'))
                   [count(*) FILTER (WHERE g.t = 'PatientCheckedIn')] AS checked_in_at,
               count(*) FILTER (WHERE g.requeues) > 0 AS requeued,
               (array_agg(g.queued_at) FILTER (WHERE g.requeues))[count(*) FILTER (WHERE g.requeues)]
                   AS queued_at,
               max(g.v) FILTER (WHERE g.requeues) AS queue_seq,
               count(*) FILTER (WHERE g.counts_no_shows) > 0 AS counted,
               (array_agg(g.no_show_count) FILTER (WHERE g.counts_no_shows))
                   [count(*) FILTER (WHERE g.counts_no_shows)] AS no_show_count,
               count(*) FILTER (WHERE g.sets_call) > 0 AS called,
               (array_agg(g.called_at) FILTER (WHERE g.sets_call))[count(*) FILTER (WHERE g.sets_call)]
                   AS called_at,
               (array_agg(g.consulting_room) FILTER (WHERE g.sets_call))
                   [count(*) FILTER (WHERE g.sets_call)] AS consulting_room,
               count(*) FILTER (WHERE g.sets_completed) > 0 AS completed,
               (array_agg(g.completed_at) FILTER (WHERE g.sets_completed))
                   [count(*) FILTER (WHERE g.sets_completed)] AS completed_at,
               count(*) FILTER (WHERE g.sets_finished) > 0 AS finished,
               (array_agg(g.finished_at) FILTER (WHERE g.sets_finished))
                   [count(*) FILTER (WHERE g.sets_finished)] AS finished_at
          FROM (SELECT * FROM good WHERE good.p IS NOT NULL ORDER BY good.q, good.p, good.v) g
         GROUP BY g.q, g.p
    ), patients AS (
        INSERT INTO waiting_patients AS w
               (queue_id, patient_id, patient_name, priority, priority_rank, consultation_type, notes,
                status, queued_at, queue_seq, no_show_count, checked_in_at, called_at, consulting_room,
                completed_at, finished_at, updated_by_event_version)
        SELECT f.q, f.p,
               CASE WHEN f.checked_in THEN f.patient_name ELSE o.patient_name END,
               CASE WHEN f.checked_in THEN f.priority ELSE o.priority END,
               CASE WHEN f.checked_in THEN priority_rank(f.priority) ELSE o.priority_rank END,
               CASE WHEN f.checked_in THEN f.consultation_type ELSE o.consultation_type END,
               CASE WHEN f.checked_in THEN f.notes ELSE o.notes END,
               f.st,
               CASE WHEN f.requeued THEN f.queued_at ELSE o.queued_at END,
               CASE WHEN f.requeued THEN f.queue_seq ELSE o.queue_seq END,
               CASE WHEN f.counted THEN f.no_show_count ELSE o.no_show_count END,
               CASE WHEN f.checked_in THEN f.checked_in_at ELSE o.checked_in_at END,
               CASE WHEN f.called THEN f.called_at ELSE o.called_at END,
               CASE WHEN f.called THEN f.consulting_room ELSE o.consulting_room END,
               CASE WHEN f.completed THEN f.completed_at ELSE o.completed_at END,
               CASE WHEN f.finished THEN f.finished_at ELSE o.finished_at END,
               f.last_v
          FROM folded f
          LEFT JOIN LATERAL (SELECT o.* FROM waiting_patients o
                              WHERE o.queue_id = f.q AND o.patient_id = f.p OFFSET 0) o ON true
        ON CONFLICT (queue_id, patient_id) DO UPDATE
           SET patient_name = EXCLUDED.patient_name,
               priority = EXCLUDED.priority,
               priority_rank = EXCLUDED.priority_rank,
               consultation_type = EXCLUDED.consultation_type,
               notes = EXCLUDED.notes,
               status = EXCLUDED.status,
               queued_at = EXCLUDED.queued_at,
               queue_seq = EXCLUDED.queue_seq,
               no_show_count = EXCLUDED.no_show_count,
               checked_in_at = EXCLUDED.checked_in_at,
               called_at = EXCLUDED.called_at,
               consulting_room = EXCLUDED.consulting_room,
               completed_at = EXCLUDED.completed_at,
               finished_at = EXCLUDED.finished_at,
               updated_by_event_version = EXCLUDED.updated_by_event_version
    ), per_queue AS (
        SELECT g.q, max(g.v) AS last_v, (array_agg(g.at ORDER BY g.v DESC))[1] AS last_at,
               (array_agg(g.name) FILTER (WHERE g.t = 'WaitingQueueCreated'))[1] AS name,
               (array_agg(g."maxCapacity") FILTER (WHERE g.t = 'WaitingQueueCreated'))[1] AS max_capacity,
               (array_agg(g."maxNoShows") FILTER (WHERE g.t = 'WaitingQueueCreated'))[1] AS max_no_shows,
               (array_agg(g."createdAt") FILTER (WHERE g.t = 'WaitingQueueCreated'))[1] AS created_at,
               coalesce(sum((g.st = 'WAITING')::integer - (g.before IS NOT DISTINCT FROM 'WAITING')::integer)
                        FILTER (WHERE g.p IS NOT NULL), 0)::integer AS waiting,
               coalesce(sum((g.st = 'CALLED')::integer - (g.before IS NOT DISTINCT FROM 'CALLED')::integer)
                        FILTER (WHERE g.p IS NOT NULL), 0)::integer AS called
          FROM good g
         GROUP BY g.q
    ), new_queues AS (
        INSERT INTO waiting_queue_view (queue_id, queue_name, max_capacity, max_no_shows,
                                        current_patient_count, waiting_count, called_count,
                                        created_at, updated_at, updated_by_event_version)
        SELECT pq.q, pq.name, pq.max_capacity, pq.max_no_shows, pq.waiting + pq.called, pq.waiting,
               pq.called, pq.created_at, pq.last_at, pq.last_v
          FROM per_queue pq
         WHERE pq.created_at IS NOT NULL
    ), keyed_queues AS (
        -- Each queue's row looked up by key, then updated by its row address (joined by
        -- queue id, every queue of the batch was compared with every other). Only the
        -- holder of the stream's lock (project_batch) updates the row.
        SELECT pq.*, k.ctid AS row_at
          FROM per_queue pq
         CROSS JOIN LATERAL (SELECT w.ctid FROM waiting_queue_view w WHERE w.queue_id = pq.q
                             OFFSET 0) k
         WHERE pq.created_at IS NULL
    ), old_queues AS (
        UPDATE waiting_queue_view w
           SET current_patient_count = w.current_patient_count + pq.waiting + pq.called,
               waiting_count = w.waiting_count + pq.waiting,
               called_count = w.called_count + pq.called,
               updated_at = pq.last_at,
               updated_by_event_version = pq.last_v
          FROM keyed_queues pq
         WHERE w.ctid = pq.row_at
    )
    SELECT f.q, f.v,
           format('waiting_room: %s v%s does not fit patient %s of queue %s: %s',
                  f.t, f.v, coalesce(f.p, '-'), f.q, f.problem)
      FROM flagged f
     WHERE f.v = f.bad_v;
END
$$;

COMMENT ON FUNCTION waiting_room_apply(text[], integer[], integer[]) IS
    'Set-based projection of the waiting room: applies events (after, to] of each stream to '
    'waiting_queue_view and waiting_patients; returns the streams whose event did not fit.';
