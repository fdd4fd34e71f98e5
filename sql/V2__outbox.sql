-- Transactional outbox: one row per event, written in the append transaction.

CREATE TABLE waiting_room_outbox (
    global_position bigint      PRIMARY KEY REFERENCES waiting_room_events (global_position),
    event_id        uuid        NOT NULL UNIQUE,
    stream_id       text        NOT NULL,
    event_type      text        NOT NULL,
    -- The writing transaction's id: the relay reads only rows whose txid is below the
    -- oldest in-flight transaction, so a later commit can never slip in behind it.
    txid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    -- Set when the relay gave up on the row (a dead row); projectors heal the gap from the store.
    failed_at       timestamptz
);

CREATE INDEX waiting_room_outbox_unpublished
    ON waiting_room_outbox (global_position) WHERE published_at IS NULL;

-- Whether the relay is idle and listening. The wake-up trigger notifies only then,
-- so a busy relay drains without every append paying NOTIFY's commit-time lock.
CREATE TABLE relay_state (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    waiting    boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO relay_state DEFAULT VALUES;

CREATE FUNCTION waiting_room_outbox_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT waiting FROM relay_state) THEN
        PERFORM pg_notify('waiting_room_outbox', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER waiting_room_outbox_wake
    AFTER INSERT ON waiting_room_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION waiting_room_outbox_wake();

-- Fire on logical-replication subscribers too.
ALTER TABLE waiting_room_outbox ENABLE ALWAYS TRIGGER waiting_room_outbox_wake;
