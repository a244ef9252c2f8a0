-- Order: orders and their idempotency keys in one row. The unique key is
-- what makes one key one order across replicas and restarts.

CREATE TABLE orders (
    order_id        TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    -- What the key was first used for: a retry must ask for the same.
    fingerprint     TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    -- JSON [["sku", quantity], …] as requested
    request_items   TEXT NOT NULL,
    -- JSON [{"sku","quantity","price_minor","currency"}] as priced
    items           TEXT NOT NULL,
    currency        TEXT NOT NULL,
    total_minor     BIGINT,
    -- pending | confirmed | payment_declined | failed
    status          TEXT NOT NULL,
    -- 1 when a failed run may be run again with the same key
    retryable       BIGINT NOT NULL DEFAULT 0,
    payment_id      TEXT,
    reservation_id  TEXT,
    failure_reason  TEXT,
    trace_id        TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    -- The replica running a pending order, and until when: past it, the
    -- recovery pass of any replica finishes the order.
    owner           TEXT NOT NULL,
    lease_until_ms  BIGINT NOT NULL
);

-- The recovery pass: pending orders by lease end.
CREATE INDEX orders_pending_by_lease ON orders (lease_until_ms) WHERE status = 'pending';
-- Retention: finished orders by last change.
CREATE INDEX orders_finished_by_update ON orders (updated_ms) WHERE status <> 'pending';
