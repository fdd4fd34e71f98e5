-- The event store: the source of truth. One stream per waiting queue (stream_id = queue id).

CREATE TABLE waiting_room_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    stream_id       text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    correlation_id  text        NOT NULL,
    causation_id    text,
    actor           text        NOT NULL,
    payload         jsonb       NOT NULL,
    -- A unique violation on this constraint IS the optimistic-concurrency conflict.
    CONSTRAINT waiting_room_events_stream_version UNIQUE (stream_id, version)
);

COMMENT ON TABLE waiting_room_events IS
    'Append-only event store; UPDATE, DELETE and TRUNCATE are rejected by triggers.';
COMMENT ON COLUMN waiting_room_events.payload IS
    'The event data, camelCase JSON with queueId and, for patient events, patientId.';

CREATE FUNCTION waiting_room_events_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'waiting_room_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Events are facts; append a compensating event instead.';
END
$$;

CREATE TRIGGER waiting_room_events_immutable
    BEFORE UPDATE OR DELETE ON waiting_room_events
    FOR EACH ROW EXECUTE FUNCTION waiting_room_events_reject_change();

CREATE TRIGGER waiting_room_events_no_truncate
    BEFORE TRUNCATE ON waiting_room_events
    FOR EACH STATEMENT EXECUTE FUNCTION waiting_room_events_reject_change();

-- One row per stream: the aggregate's state after its last event, written in the
-- append transaction, so loading a queue costs one row however long its stream is.
CREATE TABLE waiting_room_streams (
    stream_id  text        PRIMARY KEY,
    version    integer     NOT NULL,
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Commands retried with the same Idempotency-Key return the stored response.
CREATE TABLE idempotency_keys (
    idempotency_key text        PRIMARY KEY,
    request         jsonb       NOT NULL,
    stream_id       text        NOT NULL,
    response        jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
