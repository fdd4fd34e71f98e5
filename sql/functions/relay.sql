-- The relay's wake-up (ARCHITECTURE invariant 4). An append notifies only while the relay
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
-- The relay raises the flag, then reads the next transaction id to be assigned and waits
-- until every transaction below it has ended before its last look. An append that read
-- the flag as 0 did so before the flag went up, so its id is below that barrier and the
-- relay's last look sees its events; one that read 1 notifies.
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

-- The relay's commit-safe barrier (ARCHITECTURE invariant 3): the oldest transaction id that
-- may still add events. Every transaction below it that ever inserted into
-- waiting_room_events has ended, so a snapshot taken afterwards sees all their events and no
-- event can ever appear below it later.
--
-- Only event writers count: any inserter holds RowExclusiveLock on waiting_room_events from
-- before it has a transaction id until it ends, so the writers in flight are read from the
-- lock table. One that has the lock but no id yet gets an id at or above the next one to be
-- assigned, which bounds the result. Other transactions (the projector's batches, a long
-- report, a migration elsewhere on the cluster) do not hold the relay back, as a barrier on
-- pg_snapshot_xmin would.
--
-- Call it in its own statement BEFORE taking the snapshot that reads events below it.
CREATE OR REPLACE FUNCTION event_writers_horizon() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    WITH locks AS MATERIALIZED (
        SELECT locktype, relation, database, mode, granted, virtualtransaction, transactionid
          FROM pg_locks
    ), next AS (
        SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xid
    ), writers AS (
        -- pg_locks shows 32-bit xids. Widen each relative to the next xid: the signed 32-bit
        -- distance from it, added to it. (A writer may have taken its id after `next` was
        -- read, so it can lie just above; it can never lie 2^31 away.)
        SELECT n.xid + ((((t.transactionid::text::bigint - (n.xid & 4294967295)) + 2147483648)
                         & 4294967295) - 2147483648) AS xid
          FROM next n, locks r
          JOIN locks t ON t.virtualtransaction = r.virtualtransaction
         WHERE r.locktype = 'relation'
           AND r.relation = 'waiting_room_events'::regclass
           AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND r.mode = 'RowExclusiveLock' AND r.granted
           AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
    )
    SELECT least(n.xid, (SELECT min(xid) FROM writers)) FROM next n
$$;

COMMENT ON FUNCTION event_writers_horizon() IS
    'The oldest transaction id that may still add events (64-bit, as bigint): the relay '
    'publishes only events below it.';
