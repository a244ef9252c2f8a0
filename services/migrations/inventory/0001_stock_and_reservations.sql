-- Inventory: stock per SKU and reservations. Portable SQL (SQLite and
-- PostgreSQL): BIGINT integers, TEXT strings, times in ms since the epoch.

CREATE TABLE items (
    sku         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    currency    TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    -- Stock moves in one conditional UPDATE (available >= qty), so it never
    -- goes negative, whichever replica asks; the checks hold it anyway.
    available   BIGINT NOT NULL CHECK (available >= 0),
    reserved    BIGINT NOT NULL CHECK (reserved >= 0)
);

CREATE TABLE reservations (
    id          TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL,
    -- held | committed | released | expired
    state       TEXT NOT NULL,
    -- JSON [{"sku","quantity","price_minor","currency"}]
    lines       TEXT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    -- When it left `held`; retention deletes by it.
    finished_ms BIGINT
);

-- The sweeper's and the check-on-use's path: held reservations by deadline.
CREATE INDEX reservations_held_by_deadline ON reservations (deadline_ms) WHERE state = 'held';
-- At most one live reservation per order, across replicas.
CREATE UNIQUE INDEX reservations_live_per_order ON reservations (order_id)
    WHERE state IN ('held', 'committed');
CREATE INDEX reservations_by_order ON reservations (order_id);
CREATE INDEX reservations_finished ON reservations (finished_ms) WHERE finished_ms IS NOT NULL;
