//! The bounds every request is held to, in one place so the three services
//! agree and the README can list them. Past a bound a request is refused
//! with INVALID_ARGUMENT naming the field and the bound.

/// Lines in one order (and in one reservation, and SKUs in one GetStock).
pub const MAX_ITEMS: usize = 100;
/// Longest SKU, in bytes.
pub const MAX_SKU_LEN: usize = 64;
/// Longest idempotency key, customer id, order id or reservation id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest payment token, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest refund reason kept (longer ones are cut, not refused: order writes them).
pub const MAX_REASON_LEN: usize = 1024;

/// True when `s` holds a control character (NUL included). PostgreSQL's
/// TEXT refuses NUL outright (SQLite takes it), so such identifiers are
/// refused at the door on either backend, with INVALID_ARGUMENT naming the
/// field, rather than failing later as a database error.
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found() {
        assert!(has_control("a\0b"));
        assert!(has_control("tab\there"));
        assert!(has_control("\u{7f}"));
        assert!(!has_control("café-42 ok"));
    }

    #[test]
    fn truncate_keeps_characters_whole() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
