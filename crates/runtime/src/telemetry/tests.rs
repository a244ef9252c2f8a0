use super::*;

#[test]
fn bad_filter_is_reported_with_the_filter() {
    let err = init(&ServiceIdentity::new("x", "0"), "info,[[[").unwrap_err();
    assert!(err.to_string().contains("[[["), "{err}");
}
