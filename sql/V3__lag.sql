-- Per-event lag: every timestamp is Postgres time, written in transactions that happen anyway.

CREATE TABLE event_processing_lag (
    event_id                          uuid        PRIMARY KEY,
    global_position                   bigint      NOT NULL,
    stream_id                         text        NOT NULL,
    version                           integer     NOT NULL,
    event_type                        text        NOT NULL,
    event_created_at                  timestamptz NOT NULL DEFAULT clock_timestamp(),
    event_published_at                timestamptz,
    projection_processed_at           timestamptz,
    outbox_dispatch_duration_ms       double precision GENERATED ALWAYS AS
        ((extract(epoch FROM event_published_at - event_created_at) * 1000)::double precision) STORED,
    projection_processing_duration_ms double precision GENERATED ALWAYS AS
        ((extract(epoch FROM projection_processed_at - event_published_at) * 1000)::double precision) STORED,
    total_lag_ms                      double precision GENERATED ALWAYS AS
        ((extract(epoch FROM projection_processed_at - event_created_at) * 1000)::double precision) STORED,
    status                            text        NOT NULL DEFAULT 'CREATED'
        CHECK (status IN ('CREATED', 'PUBLISHED', 'PROCESSED', 'FAILED')),
    failure_reason                    text
);

CREATE INDEX event_processing_lag_created ON event_processing_lag (event_created_at);
CREATE INDEX event_processing_lag_stream ON event_processing_lag (stream_id, version);
CREATE INDEX event_processing_lag_slowest ON event_processing_lag (total_lag_ms DESC)
    WHERE total_lag_ms IS NOT NULL;
