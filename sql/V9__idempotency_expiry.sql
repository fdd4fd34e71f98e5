-- Idempotency-Keys expire after IDEMPOTENCY_TTL (default 24h). The API's retention job
-- deletes expired records oldest first, a small batch per statement
-- (src/store/retention.rs); this index makes each batch a short range scan instead of a
-- sequential scan of the table. A lookup by key keeps using the primary key.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
