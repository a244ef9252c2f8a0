use super::*;

#[test]
fn bad_filter_is_reported_with_the_filter() {
    let err = init(&ServiceIdentity::new("x", "0"), "info,[[[").unwrap_err();
    assert!(err.to_string().contains("[[["), "{err}");
}

#[test]
fn status_code_names_and_classes() {
    assert_eq!(code_name(0), "OK");
    assert_eq!(code_name(14), "UNAVAILABLE");
    assert_eq!(code_name(99), "INVALID_CODE");
    assert!(is_server_error(14) && is_server_error(13) && is_server_error(4));
    assert!(
        !is_server_error(0) && !is_server_error(3) && !is_server_error(5) && !is_server_error(9)
    );
}
