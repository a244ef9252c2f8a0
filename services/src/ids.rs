//! The ids the services make (orders, reservations, payments): the time
//! first, then randomness, so that ids made later sort later.
//!
//! Why the time first: every id is a key of a B-tree index (the orders' and
//! payments' primary keys, the reservations' index by order). A random key
//! lands on a random leaf page, and in SQLite every page a commit touches
//! is written whole to the WAL: with random ids, each order dirtied a leaf
//! of its own in each of those indexes, in each service. Ids in time order
//! land on the index's last leaf, which the orders of one group commit
//! share (docs/benchmarks.md measures the difference). PostgreSQL's B-trees
//! gain the same way (fewer pages in its WAL and buffer cache).
//!
//! Format: `{prefix}-{ms:012x}{random:016x}`, the creation time in ms since
//! the Unix epoch (12 hex digits last until the year 10889) and 64 random
//! bits: unique however many ids one millisecond makes, on any replica.
//! An id therefore tells when it was made; nothing else.

use std::time::{SystemTime, UNIX_EPOCH};

/// A new id `{prefix}-…` (see the module docs), sorting after every id with
/// the same prefix made in an earlier millisecond on a clock that agrees.
pub fn new_id(prefix: &str) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{prefix}-{:012x}{:016x}",
        ms & 0xffff_ffff_ffff,
        rand::random::<u64>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_fixed_width_hex() {
        let id = new_id("ord");
        let hex = id.strip_prefix("ord-").expect("prefix");
        assert_eq!(hex.len(), 28, "{id}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    #[test]
    fn later_ids_sort_later_and_all_differ() {
        let first = new_id("res");
        let start = std::time::Instant::now();
        // Until the clock has moved on by a millisecond (bounded).
        let mut later = new_id("res");
        while later[4..16] == first[4..16] && start.elapsed().as_secs() < 5 {
            later = new_id("res");
        }
        assert!(later > first, "{later} after {first}");
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| new_id("pay")).collect();
        assert_eq!(many.len(), 10_000);
    }
}
