-- Payment: one row per order, ever: the primary key is what makes a charge
-- happen at most once per order across replicas and restarts.

CREATE TABLE payments (
    order_id       TEXT PRIMARY KEY,
    payment_id     TEXT NOT NULL UNIQUE,
    customer_id    TEXT NOT NULL,
    currency       TEXT NOT NULL,
    amount_minor   BIGINT NOT NULL,
    -- charged | declined | refunded
    status         TEXT NOT NULL,
    charge_count   BIGINT NOT NULL,
    decline_reason TEXT,
    refund_reason  TEXT,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL
);

-- Retention deletes by last change.
CREATE INDEX payments_by_update ON payments (updated_ms);
