-- The relay's wake-up (ARCHITECTURE invariant 4): an append notifies only when the relay
-- has said it is idle (relay_state.waiting), and only the first append after that does:
-- it clears the flag in its own transaction, so appends that arrive while its commit is in
-- flight wait for that row lock and then find the flag cleared. If the first one rolls
-- back, its clearing rolls back with it and the next append notifies. So a busy relay costs
-- appends nothing, and an idle one costs one NOTIFY (whose commit-time lock serialises
-- notifying commits) per wake-up instead of one per append.
CREATE OR REPLACE FUNCTION waiting_room_events_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM relay_state WHERE waiting) THEN
        UPDATE relay_state SET waiting = false, updated_at = clock_timestamp() WHERE waiting;
        IF FOUND THEN
            PERFORM pg_notify('waiting_room_outbox', '');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION waiting_room_events_wake() IS
    'Outbox wake-up: NOTIFY waiting_room_outbox once per idle period of the relay.';

CREATE OR REPLACE TRIGGER waiting_room_events_wake
    AFTER INSERT ON waiting_room_events
    FOR EACH STATEMENT EXECUTE FUNCTION waiting_room_events_wake();

-- Fire on logical-replication subscribers too.
ALTER TABLE waiting_room_events ENABLE ALWAYS TRIGGER waiting_room_events_wake;
