-- Units reserved are no longer counted on the SKU's row: GetStock sums the
-- lines of the held reservations instead (the partial index on held
-- reservations finds them). Reserve is then the only write on an `items`
-- row per order (Commit writes only its reservation), so the row of a
-- popular SKU is locked once per order instead of twice; on PostgreSQL that
-- lock is held until the commit's WAL flush.
--
-- Upgrade: stop replicas of older builds before the first new one starts
-- (it applies this at start; the old statements name the dropped column).
ALTER TABLE items DROP COLUMN reserved;
