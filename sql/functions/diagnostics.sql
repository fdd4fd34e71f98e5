-- Diagnostics for psql users and the API, over the lag facts the projector writes.

-- End-to-end lag (created -> processed) of events created within the window:
-- one overall row (event_type IS NULL) then one row per event type.
-- events_per_second = processed events / window length.
CREATE OR REPLACE FUNCTION lag_statistics(p_window interval DEFAULT interval '1 hour')
RETURNS TABLE (
    event_type        text,
    event_count       bigint,
    min_ms            double precision,
    avg_ms            double precision,
    p50_ms            double precision,
    p95_ms            double precision,
    p99_ms            double precision,
    max_ms            double precision,
    events_per_second double precision
)
LANGUAGE sql STABLE AS $$
    SELECT l.event_type,
           count(*),
           min(l.total_lag_ms),
           avg(l.total_lag_ms),
           percentile_cont(0.50) WITHIN GROUP (ORDER BY l.total_lag_ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY l.total_lag_ms),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY l.total_lag_ms),
           max(l.total_lag_ms),
           count(*) / greatest(extract(epoch FROM p_window)::double precision, 0.001)
      FROM event_lag_facts l
     WHERE l.status = 'PROCESSED'
       AND l.event_created_at >= clock_timestamp() - p_window
     GROUP BY GROUPING SETS ((), (l.event_type))
     ORDER BY l.event_type NULLS FIRST
$$;

COMMENT ON FUNCTION lag_statistics(interval) IS
    'End-to-end lag (ms, created -> projected) of events created within the window: an overall '
    'row (event_type NULL), then one per event type.';

-- The n events with the largest end-to-end lag, with their stage durations.
CREATE OR REPLACE FUNCTION slowest_events(n integer DEFAULT 10)
RETURNS TABLE (
    event_id                          uuid,
    event_type                        text,
    stream_id                         text,
    version                           integer,
    status                            text,
    event_created_at                  timestamptz,
    event_published_at                timestamptz,
    projection_processed_at           timestamptz,
    outbox_dispatch_duration_ms       double precision,
    projection_processing_duration_ms double precision,
    total_lag_ms                      double precision
)
LANGUAGE sql STABLE AS $$
    SELECT l.event_id, l.event_type, l.stream_id, l.version, l.status, l.event_created_at,
           l.event_published_at, l.projection_processed_at, l.outbox_dispatch_duration_ms,
           l.projection_processing_duration_ms, l.total_lag_ms
      FROM event_lag_facts l
     WHERE l.total_lag_ms IS NOT NULL
     ORDER BY l.total_lag_ms DESC, l.event_id
     LIMIT greatest(n, 0)
$$;

COMMENT ON FUNCTION slowest_events(integer) IS
    'The n projected events with the largest end-to-end lag, with their stage durations.';

-- Functions created by migrations, described here so that \df+ explains them too.
COMMENT ON FUNCTION advisory_lock_held(integer, integer) IS
    'Whether any session of this database holds the two-key advisory lock (k1, k2); '
    'advisory_lock_held(2002872692, 1919249529) is "a relay leads".';

COMMENT ON FUNCTION waiting_room_events_reject_change() IS
    'Trigger function keeping waiting_room_events append-only: rejects UPDATE, DELETE and TRUNCATE.';
