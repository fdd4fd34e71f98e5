-- The waiting-room read model: applies a batch of events to waiting_queue_view and
-- waiting_patients in ONE statement, whatever the number of events or streams.
--
-- The rules mirror the Rust domain (src/domain/queue.rs), which owns them; the property
-- test tests/pipeline/model.rs checks that both agree on statuses and positions.

CREATE OR REPLACE FUNCTION priority_rank(p text) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT AS $$
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
CREATE OR REPLACE FUNCTION waiting_room_apply(p_streams text[], p_after integer[], p_to integer[])
RETURNS TABLE (stream_id text, bad_version integer, error text)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH ev AS (
        SELECT e.stream_id AS q, e.version AS v, e.event_type AS t, e.occurred_at AS at,
               e.payload AS d, e.payload ->> 'patientId' AS p,
               CASE e.event_type
                   WHEN 'PatientCheckedIn' THEN 'WAITING'
                   WHEN 'PatientCalled' THEN 'CALLED'
                   WHEN 'PatientConsultationCompleted' THEN 'COMPLETED'
                   WHEN 'PatientMarkedNoShow' THEN e.payload ->> 'status'
                   WHEN 'PatientCheckInCancelled' THEN 'CANCELLED'
               END AS st
          FROM unnest(p_streams, p_after, p_to) AS r(q, after_v, to_v)
          JOIN waiting_room_events e
            ON e.stream_id = r.q AND e.version > r.after_v AND e.version <= r.to_v
    ), judged AS (
        SELECT ev.*,
               -- The status before this event: the batch's previous event for this patient,
               -- else the stored row. (An earlier event with no status is a bad one, and
               -- nothing after a bad event is applied.)
               coalesce(lag(ev.st) OVER patient, wp.status) AS before,
               qv.queue_id IS NOT NULL
                 OR min(ev.v) FILTER (WHERE ev.t = 'WaitingQueueCreated') OVER queue < ev.v AS queue_exists
          FROM ev
          LEFT JOIN waiting_patients wp ON wp.queue_id = ev.q AND wp.patient_id = ev.p
          LEFT JOIN waiting_queue_view qv ON qv.queue_id = ev.q
        WINDOW patient AS (PARTITION BY ev.q, ev.p ORDER BY ev.v),
               queue AS (PARTITION BY ev.q)
    ), checked AS (
        SELECT j.*,
               CASE
                   WHEN j.t = 'WaitingQueueCreated' THEN
                       CASE WHEN j.queue_exists THEN 'the queue exists already'
                            WHEN j.d ->> 'name' IS NULL OR j.d ->> 'maxCapacity' IS NULL
                                 OR j.d ->> 'maxNoShows' IS NULL OR j.d ->> 'createdAt' IS NULL
                                THEN 'name, maxCapacity, maxNoShows and createdAt are required'
                       END
                   WHEN j.st IS NULL AND j.t <> 'PatientMarkedNoShow' THEN 'unknown event type'
                   WHEN NOT coalesce(j.queue_exists, false) THEN 'the queue is not in waiting_queue_view'
                   WHEN j.p IS NULL THEN 'patientId is required'
                   WHEN j.t = 'PatientCheckedIn' THEN
                       CASE WHEN j.before IN ('WAITING', 'CALLED') THEN 'the patient is ' || j.before
                            WHEN j.d ->> 'patientName' IS NULL OR priority_rank(j.d ->> 'priority') IS NULL
                                 OR j.d ->> 'consultationType' IS NULL OR j.d ->> 'checkedInAt' IS NULL
                                THEN 'patientName, priority, consultationType and checkedInAt are required'
                       END
                   WHEN j.t = 'PatientCalled' THEN
                       CASE WHEN j.before IS DISTINCT FROM 'WAITING' THEN 'the patient is not WAITING'
                            WHEN j.d ->> 'calledAt' IS NULL OR j.d ->> 'consultingRoom' IS NULL
                                THEN 'calledAt and consultingRoom are required'
                       END
                   WHEN j.t = 'PatientConsultationCompleted' THEN
                       CASE WHEN j.before IS DISTINCT FROM 'CALLED' THEN 'the patient is not CALLED'
                            WHEN j.d ->> 'completedAt' IS NULL THEN 'completedAt is required'
                       END
                   WHEN j.t = 'PatientMarkedNoShow' THEN
                       CASE WHEN j.before IS DISTINCT FROM 'CALLED' THEN 'the patient is not CALLED'
                            WHEN j.st IS NULL OR j.st NOT IN ('WAITING', 'NO_SHOW')
                                THEN 'status must be WAITING or NO_SHOW'
                            WHEN j.d ->> 'noShowCount' IS NULL OR j.d ->> 'markedAt' IS NULL
                                THEN 'noShowCount and markedAt are required'
                       END
                   WHEN j.t = 'PatientCheckInCancelled' THEN
                       CASE WHEN j.before IS NULL OR j.before NOT IN ('WAITING', 'CALLED')
                                THEN 'the patient is neither WAITING nor CALLED'
                            WHEN j.d ->> 'cancelledAt' IS NULL THEN 'cancelledAt is required'
                       END
               END AS problem
          FROM judged j
    ), flagged AS (
        SELECT c.*, min(c.v) FILTER (WHERE c.problem IS NOT NULL) OVER (PARTITION BY c.q) AS bad_v
          FROM checked c
    ), good AS (
        SELECT f.q, f.v, f.t, f.at, f.d, f.p, f.st, f.before,
               f.t = 'PatientCheckedIn' OR (f.t = 'PatientMarkedNoShow' AND f.st = 'WAITING') AS requeues,
               CASE WHEN f.t = 'PatientCheckedIn' THEN (f.d ->> 'checkedInAt')::timestamptz
                    ELSE (f.d ->> 'markedAt')::timestamptz END AS queued_at,
               f.t IN ('PatientCheckedIn', 'PatientMarkedNoShow') AS counts_no_shows,
               CASE WHEN f.t = 'PatientMarkedNoShow' THEN (f.d ->> 'noShowCount')::integer ELSE 0 END
                   AS no_show_count,
               f.t IN ('PatientCheckedIn', 'PatientCalled')
                 OR (f.t = 'PatientMarkedNoShow' AND f.st = 'WAITING') AS sets_call,
               CASE WHEN f.t = 'PatientCalled' THEN (f.d ->> 'calledAt')::timestamptz END AS called_at,
               CASE WHEN f.t = 'PatientCalled' THEN f.d ->> 'consultingRoom' END AS consulting_room,
               f.t IN ('PatientCheckedIn', 'PatientConsultationCompleted') AS sets_completed,
               CASE WHEN f.t = 'PatientConsultationCompleted' THEN (f.d ->> 'completedAt')::timestamptz END
                   AS completed_at,
               f.t <> 'PatientCalled' AS sets_finished,
               CASE f.t WHEN 'PatientConsultationCompleted' THEN (f.d ->> 'completedAt')::timestamptz
                        WHEN 'PatientMarkedNoShow' THEN
                            CASE WHEN f.st = 'NO_SHOW' THEN (f.d ->> 'markedAt')::timestamptz END
                        WHEN 'PatientCheckInCancelled' THEN (f.d ->> 'cancelledAt')::timestamptz
               END AS finished_at
          FROM flagged f
         WHERE f.bad_v IS NULL OR f.v < f.bad_v
    ), folded AS (
        SELECT g.q, g.p, max(g.v) AS last_v,
               (array_agg(g.st ORDER BY g.v DESC))[1] AS st,
               (array_agg(g.d ORDER BY g.v DESC) FILTER (WHERE g.t = 'PatientCheckedIn'))[1] AS ci,
               bool_or(g.requeues) AS requeued,
               (array_agg(g.queued_at ORDER BY g.v DESC) FILTER (WHERE g.requeues))[1] AS queued_at,
               (array_agg(g.v ORDER BY g.v DESC) FILTER (WHERE g.requeues))[1] AS queue_seq,
               bool_or(g.counts_no_shows) AS counted,
               (array_agg(g.no_show_count ORDER BY g.v DESC) FILTER (WHERE g.counts_no_shows))[1]
                   AS no_show_count,
               bool_or(g.sets_call) AS called,
               (array_agg(g.called_at ORDER BY g.v DESC) FILTER (WHERE g.sets_call))[1] AS called_at,
               (array_agg(g.consulting_room ORDER BY g.v DESC) FILTER (WHERE g.sets_call))[1]
                   AS consulting_room,
               bool_or(g.sets_completed) AS completed,
               (array_agg(g.completed_at ORDER BY g.v DESC) FILTER (WHERE g.sets_completed))[1]
                   AS completed_at,
               bool_or(g.sets_finished) AS finished,
               (array_agg(g.finished_at ORDER BY g.v DESC) FILTER (WHERE g.sets_finished))[1]
                   AS finished_at
          FROM good g
         WHERE g.p IS NOT NULL
         GROUP BY g.q, g.p
    ), patients AS (
        INSERT INTO waiting_patients AS w
               (queue_id, patient_id, patient_name, priority, priority_rank, consultation_type, notes,
                status, queued_at, queue_seq, no_show_count, checked_in_at, called_at, consulting_room,
                completed_at, finished_at, updated_by_event_version)
        SELECT f.q, f.p,
               CASE WHEN f.ci IS NULL THEN o.patient_name ELSE f.ci ->> 'patientName' END,
               CASE WHEN f.ci IS NULL THEN o.priority ELSE f.ci ->> 'priority' END,
               CASE WHEN f.ci IS NULL THEN o.priority_rank ELSE priority_rank(f.ci ->> 'priority') END,
               CASE WHEN f.ci IS NULL THEN o.consultation_type ELSE f.ci ->> 'consultationType' END,
               CASE WHEN f.ci IS NULL THEN o.notes ELSE f.ci ->> 'notes' END,
               f.st,
               CASE WHEN f.requeued THEN f.queued_at ELSE o.queued_at END,
               CASE WHEN f.requeued THEN f.queue_seq ELSE o.queue_seq END,
               CASE WHEN f.counted THEN f.no_show_count ELSE o.no_show_count END,
               CASE WHEN f.ci IS NULL THEN o.checked_in_at ELSE (f.ci ->> 'checkedInAt')::timestamptz END,
               CASE WHEN f.called THEN f.called_at ELSE o.called_at END,
               CASE WHEN f.called THEN f.consulting_room ELSE o.consulting_room END,
               CASE WHEN f.completed THEN f.completed_at ELSE o.completed_at END,
               CASE WHEN f.finished THEN f.finished_at ELSE o.finished_at END,
               f.last_v
          FROM folded f
          LEFT JOIN waiting_patients o ON o.queue_id = f.q AND o.patient_id = f.p
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
               (array_agg(g.d) FILTER (WHERE g.t = 'WaitingQueueCreated'))[1] AS created,
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
        SELECT pq.q, pq.created ->> 'name', (pq.created ->> 'maxCapacity')::integer,
               (pq.created ->> 'maxNoShows')::integer, pq.waiting + pq.called, pq.waiting, pq.called,
               (pq.created ->> 'createdAt')::timestamptz, pq.last_at, pq.last_v
          FROM per_queue pq
         WHERE pq.created IS NOT NULL
    ), old_queues AS (
        UPDATE waiting_queue_view w
           SET current_patient_count = w.current_patient_count + pq.waiting + pq.called,
               waiting_count = w.waiting_count + pq.waiting,
               called_count = w.called_count + pq.called,
               updated_at = pq.last_at,
               updated_by_event_version = pq.last_v
          FROM per_queue pq
         WHERE w.queue_id = pq.q AND pq.created IS NULL
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
