-- V8: cheaper appends and set-based projections (docs/performance.md has the measurements).
--
-- * The event table is the outbox. Each event row carries its writing transaction id; the
--   relay publishes each event once it is visible, batch by batch: a batch is the events
--   that became visible between two snapshots (as PgQ does), and the relay's cursor is the
--   last snapshot it has published. An append writes one row instead of three (event,
--   outbox row, lag row) and the relay writes one small cursor row per batch instead of two
--   updates per event.
-- * Lag facts are written once, by the transaction that projects the event.
-- * waiting_room_outbox and event_processing_lag keep their names and columns as views.
-- * position_in_queue is computed when read (an index holds the call order), so an event
--   never renumbers a whole queue.
-- * Functions live in sql/functions/ (CREATE OR REPLACE, applied after the migrations).

-- ---------------------------------------------------------------- byte-order ids
-- Ids are compared and sorted on every lookup; in the database's default collation that is
-- a locale comparison (strcoll) per step of every index search and sort, a visible share of
-- the projection's time. Byte order is what ids mean anyway.
ALTER TABLE waiting_room_events ALTER COLUMN stream_id TYPE text COLLATE "C";
ALTER TABLE waiting_room_streams ALTER COLUMN stream_id TYPE text COLLATE "C";
ALTER TABLE idempotency_keys ALTER COLUMN idempotency_key TYPE text COLLATE "C",
                             ALTER COLUMN stream_id TYPE text COLLATE "C";
ALTER TABLE event_processing_lag ALTER COLUMN stream_id TYPE text COLLATE "C";
ALTER TABLE projection_checkpoints ALTER COLUMN projection TYPE text COLLATE "C",
                                   ALTER COLUMN stream_id TYPE text COLLATE "C";
ALTER TABLE waiting_queue_view ALTER COLUMN queue_id TYPE text COLLATE "C";
ALTER TABLE waiting_patients_view ALTER COLUMN queue_id TYPE text COLLATE "C",
                                  ALTER COLUMN patient_id TYPE text COLLATE "C";

-- ---------------------------------------------------------------- events as the outbox

-- Existing rows get this migration's transaction id; the cursor below starts at the oldest
-- unpublished one.
ALTER TABLE waiting_room_events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
COMMENT ON COLUMN waiting_room_events.txid IS
    'The writing transaction id: the relay publishes events by the snapshots in which they '
    'became visible (see relay_cursor).';
CREATE INDEX waiting_room_events_relay_order ON waiting_room_events (txid, global_position);

-- How far the relay has published. Every event visible in `done` has been confirmed by
-- RabbitMQ (or given up on, see waiting_room_outbox_failures). While a large batch is
-- published in parts, the events visible in `upper` (and not in `done`) up to
-- (after_txid, after_position) in publish order are published too.
CREATE TABLE relay_cursor (
    id             boolean     PRIMARY KEY DEFAULT true CHECK (id),
    done           pg_snapshot NOT NULL,
    upper          pg_snapshot,
    after_txid     xid8,
    after_position bigint,
    advanced_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((upper IS NULL) = (after_txid IS NULL) AND (upper IS NULL) = (after_position IS NULL))
);
COMMENT ON TABLE relay_cursor IS
    'The relay''s progress: events visible in done (and, mid-batch, those visible in upper up '
    'to (after_txid, after_position)) are published.';

-- Every existing event carries this transaction's id X. Nothing unpublished: done sees all
-- of them (X+1:X+1:). Otherwise done sees none (X:X:) and the partial batch covers them up
-- to the last one before the oldest unpublished.
INSERT INTO relay_cursor (done, upper, after_txid, after_position)
SELECT CASE WHEN u.first IS NULL THEN format('%s:%s:', x.id + 1, x.id + 1)
            ELSE format('%s:%s:', x.id, x.id) END::pg_snapshot,
       CASE WHEN u.first IS NOT NULL THEN format('%s:%s:', x.id + 1, x.id + 1)::pg_snapshot END,
       CASE WHEN u.first IS NOT NULL THEN pg_current_xact_id() END,
       u.first - 1
  FROM (SELECT pg_current_xact_id()::text::bigint AS id) x,
       (SELECT min(global_position) AS first FROM waiting_room_outbox
         WHERE published_at IS NULL AND failed_at IS NULL) u;

-- Whether the relay has published event (t, p) according to cursor c.
CREATE FUNCTION relay_published(t xid8, p bigint, c relay_cursor) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_visible_in_snapshot(t, c.done)
        OR coalesce(pg_visible_in_snapshot(t, c.upper) AND (t, p) <= (c.after_txid, c.after_position),
                    false)
$$;
COMMENT ON FUNCTION relay_published(xid8, bigint, relay_cursor) IS
    'Whether the relay has published the event written by transaction t at position p.';

-- Whether the relay is idle and wants a NOTIFY (1) or is busy (0). A sequence, not a row:
-- setval() and reads of it are not transactional, so an append sees the flag as it is at
-- the moment it looks, after its own transaction id was assigned (see sql/functions/relay.sql
-- and src/relay/listener.rs for why that ordering makes the hand-over race-free).
DROP TABLE relay_state;
CREATE SEQUENCE relay_wakeup MINVALUE 0 MAXVALUE 1 START 0 NO CYCLE;
COMMENT ON SEQUENCE relay_wakeup IS
    'The relay''s idle flag: 1 while it sleeps on LISTEN waiting_room_outbox, else 0.';
CREATE VIEW relay_state AS SELECT last_value = 1 AS waiting FROM relay_wakeup;
COMMENT ON VIEW relay_state IS 'Whether the relay is idle and waiting for a NOTIFY.';

-- Events RabbitMQ refused (nack). A row is dead (skipped; projectors heal the gap from the
-- event store) once failed_at is set, after MAX_ATTEMPTS refusals.
CREATE TABLE waiting_room_outbox_failures (
    global_position bigint      PRIMARY KEY REFERENCES waiting_room_events (global_position),
    event_id        uuid        NOT NULL UNIQUE,
    attempts        integer     NOT NULL,
    last_error      text,
    failed_at       timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE waiting_room_outbox_failures IS
    'Publish refusals per event; failed_at is set when the relay gave up on the event (a dead row).';

INSERT INTO waiting_room_outbox_failures (global_position, event_id, attempts, last_error, failed_at)
SELECT global_position, event_id, attempts, last_error, failed_at
  FROM waiting_room_outbox
 WHERE published_at IS NULL AND (attempts > 0 OR failed_at IS NOT NULL);

-- ---------------------------------------------------------------- lag facts

ALTER TABLE event_processing_lag RENAME TO event_lag_facts;
ALTER INDEX event_processing_lag_pkey RENAME TO event_lag_facts_pkey;
ALTER INDEX event_processing_lag_created RENAME TO event_lag_facts_created;
ALTER INDEX event_processing_lag_slowest RENAME TO event_lag_facts_slowest;
DROP INDEX event_processing_lag_stream;
-- Facts arrive in creation order, so a block-range index serves the time-window statistics
-- (lag_statistics) at a fraction of a b-tree's cost per insert.
DROP INDEX event_lag_facts_created;
CREATE INDEX event_lag_facts_created ON event_lag_facts USING brin (event_created_at);
-- Unprocessed events are represented by the event_processing_lag view from now on.
DELETE FROM event_lag_facts WHERE status NOT IN ('PROCESSED', 'FAILED');
ALTER TABLE event_lag_facts DROP CONSTRAINT event_processing_lag_status_check;
ALTER TABLE event_lag_facts ADD CONSTRAINT event_lag_facts_status_check
    CHECK (status IN ('PROCESSED', 'FAILED'));
ALTER TABLE event_lag_facts ALTER COLUMN status DROP DEFAULT;
COMMENT ON TABLE event_lag_facts IS
    'One row per projected (or failed) event, written by the transaction that applied it to '
    'the read models: its xmin commit timestamp is the read model''s commit time.';

-- ---------------------------------------------------------------- read models

ALTER TABLE waiting_patients_view RENAME TO waiting_patients;
ALTER INDEX waiting_patients_view_pkey RENAME TO waiting_patients_pkey;
DROP INDEX waiting_patients_view_active;
ALTER TABLE waiting_patients DROP COLUMN position_in_queue;
-- Call order of the active patients: the read-time position. Partial, so that a visit that
-- ends (most updates) adds no entry to it.
CREATE INDEX waiting_patients_active
    ON waiting_patients (queue_id, status, priority_rank DESC, queued_at, queue_seq)
    WHERE status IN ('WAITING', 'CALLED');

CREATE VIEW waiting_patients_view AS
SELECT queue_id, patient_id, patient_name, priority, priority_rank, consultation_type, notes, status,
       CASE WHEN status = 'WAITING' THEN row_number() OVER call_order END::integer AS position_in_queue,
       queued_at, queue_seq, no_show_count, checked_in_at, called_at, consulting_room,
       completed_at, finished_at, updated_by_event_version
  FROM waiting_patients
WINDOW call_order AS (PARTITION BY queue_id, status ORDER BY priority_rank DESC, queued_at, queue_seq);
COMMENT ON VIEW waiting_patients_view IS
    'Patients per queue; position_in_queue is the 1-based place among WAITING patients in call '
    'order (priority, then queue time, then stream order), computed when read.';

-- The projection function is now set-based and defined in sql/functions/.
ALTER TABLE projections ALTER COLUMN apply_function TYPE text USING apply_function::text;
UPDATE projections
   SET apply_function = 'waiting_room_apply',
       read_models = ARRAY['waiting_queue_view', 'waiting_patients']
 WHERE name = 'waiting_room';
COMMENT ON COLUMN projections.apply_function IS
    'Set-based apply function: (streams text[], after_versions int[], to_versions int[]) -> '
    'TABLE (stream_id text, bad_version int, error text).';

-- The write model's snapshots: one row per stream, rewritten every few hundred events (and
-- at creation), not on every append. The concurrency check of an append is the unique
-- (stream_id, version) of the events themselves.
ALTER TABLE waiting_room_streams RENAME TO waiting_room_snapshots;
ALTER INDEX waiting_room_streams_pkey RENAME TO waiting_room_snapshots_pkey;
COMMENT ON TABLE waiting_room_snapshots IS
    'One row per stream: the queue aggregate as of version; later events are folded on load.';

-- ---------------------------------------------------------------- views with the old names

-- Unpublished events are among those not visible in the cursor's `done` snapshot: the
-- ones at or past its xmax and the ones of the transactions it saw in flight.
CREATE OR REPLACE VIEW outbox_pending AS
WITH unpublished AS (
    SELECT e.global_position, e.recorded_at
      FROM relay_cursor c
     CROSS JOIN LATERAL (
           SELECT * FROM waiting_room_events e WHERE e.txid >= pg_snapshot_xmax(c.done)
           UNION ALL
           SELECT * FROM waiting_room_events e
            WHERE e.txid = ANY (ARRAY(SELECT pg_snapshot_xip(c.done)))) e
     WHERE NOT relay_published(e.txid, e.global_position, c)
       AND NOT EXISTS (SELECT 1 FROM waiting_room_outbox_failures f
                        WHERE f.global_position = e.global_position AND f.failed_at IS NOT NULL)
)
SELECT (SELECT count(*) FROM unpublished) AS pending,
       (SELECT (extract(epoch FROM clock_timestamp() - min(recorded_at)) * 1000)::double precision
          FROM unpublished) AS oldest_age_ms,
       (SELECT count(*) FROM waiting_room_outbox_failures WHERE failed_at IS NOT NULL) AS failed;

DROP TABLE waiting_room_outbox;
DROP FUNCTION waiting_room_outbox_wake();

CREATE VIEW waiting_room_outbox AS
SELECT e.global_position, e.event_id, e.stream_id, e.event_type, e.txid, e.recorded_at AS created_at,
       CASE WHEN p.published THEN coalesce(l.event_published_at, c.advanced_at) END AS published_at,
       coalesce(x.attempts, 0) + p.published::integer AS attempts,
       x.last_error,
       x.failed_at
  FROM waiting_room_events e
 CROSS JOIN relay_cursor c
  LEFT JOIN waiting_room_outbox_failures x ON x.global_position = e.global_position
  LEFT JOIN event_lag_facts l ON l.event_id = e.event_id
 CROSS JOIN LATERAL (SELECT relay_published(e.txid, e.global_position, c)
                            AND x.failed_at IS NULL AS published) p;
COMMENT ON VIEW waiting_room_outbox IS
    'One row per event: published_at is null until RabbitMQ confirmed it (the relay''s dispatch '
    'time, or when its cursor passed the event), attempts and last_error from refusals, '
    'failed_at when the relay gave up.';

CREATE VIEW event_processing_lag AS
SELECT f.event_id, f.global_position, f.stream_id, f.version, f.event_type, f.event_created_at,
       f.event_published_at, f.projection_processed_at, f.outbox_dispatch_duration_ms,
       f.projection_processing_duration_ms, f.total_lag_ms, f.status, f.failure_reason
  FROM event_lag_facts f
UNION ALL
SELECT e.event_id, e.global_position, e.stream_id, e.version, e.event_type, e.recorded_at,
       CASE WHEN p.published THEN c.advanced_at END, NULL::timestamptz,
       CASE WHEN p.published
            THEN (extract(epoch FROM c.advanced_at - e.recorded_at) * 1000)::double precision END,
       NULL::double precision, NULL::double precision,
       CASE WHEN x.failed_at IS NOT NULL THEN 'FAILED'
            WHEN p.published THEN 'PUBLISHED'
            ELSE 'CREATED' END,
       x.last_error
  FROM waiting_room_events e
 CROSS JOIN relay_cursor c
  LEFT JOIN waiting_room_outbox_failures x ON x.global_position = e.global_position
 CROSS JOIN LATERAL (SELECT relay_published(e.txid, e.global_position, c)
                            AND x.failed_at IS NULL AS published) p
 WHERE NOT EXISTS (SELECT 1 FROM event_lag_facts f WHERE f.event_id = e.event_id);
COMMENT ON VIEW event_processing_lag IS
    'Every event''s lag: the facts written when it was projected (PROCESSED/FAILED), else '
    'CREATED or PUBLISHED from the relay''s cursor.';

-- ---------------------------------------------------------------- old per-event functions

DROP FUNCTION project_stream(text, text, integer);
DROP FUNCTION apply_stream_range(text, text, integer, integer);
DROP FUNCTION project_waiting_room(waiting_room_events);
DROP FUNCTION refresh_waiting_queue(text, integer, timestamptz);
DROP FUNCTION reset_projection(text);

-- Functions (sql/functions/) recorded by content, re-applied when a file changes.
CREATE TABLE schema_functions (
    name       text        PRIMARY KEY,
    body       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
