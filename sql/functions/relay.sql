-- The relay's wake-up (docs/ARCHITECTURE.md, invariant 4). An append notifies only while the relay
-- says it is idle (relay_wakeup = 1), so a busy relay costs appends nothing: no NOTIFY and
-- its commit-time lock, which serialises notifying commits.
--
-- The store's append statement does this itself (src/store/append.rs), because a trigger
-- invocation costs more than the rest of the wake-up. This trigger does the same for
-- events applied by logical replication on a subscriber (ENABLE REPLICA: it fires only
-- there), so a relay running on a subscriber is woken too. Rows written any other way are
-- picked up by the relay's safety sweep within seconds.
--
-- Why no wake-up is lost: the flag is read after the appending transaction has its id.
-- The relay raises the flag, then takes a snapshot and waits until every transaction that
-- snapshot saw in flight has ended before its last look. An append that read the flag as
-- 0 did so before the flag went up, so it had its id before that snapshot: it had either
-- committed (and the snapshot shows its events) or was in flight (and the last look does);
-- one that read 1 notifies.
CREATE OR REPLACE FUNCTION waiting_room_events_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT last_value FROM relay_wakeup) = 1 THEN
        PERFORM pg_notify('waiting_room_outbox', '');
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION waiting_room_events_wake() IS
    'Outbox wake-up for events replicated into this database: NOTIFY waiting_room_outbox while the relay is idle.';

CREATE OR REPLACE TRIGGER waiting_room_events_wake
    AFTER INSERT ON waiting_room_events
    FOR EACH STATEMENT EXECUTE FUNCTION waiting_room_events_wake();

-- Only on logical-replication subscribers (session_replication_role = replica).
ALTER TABLE waiting_room_events ENABLE REPLICA TRIGGER waiting_room_events_wake;

