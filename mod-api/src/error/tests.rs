use super::*;

#[test]
fn retryable_follows_kind_unless_overridden() {
    assert!(Error::timeout("slow").is_retryable());
    assert!(!Error::not_found("gone").is_retryable());
    assert!(Error::not_found("gone").with_retryable(true).is_retryable());
}

#[test]
fn serialization_keeps_kind_flag_and_source_text() {
    let io = std::io::Error::other("disk on fire");
    let err = Error::new(ErrorKind::Io, "overflow write failed").with_source(io);
    let bytes = crate::codec::encode(&err).unwrap();
    let back: Error = crate::codec::decode(&bytes).unwrap();
    assert_eq!(back.kind(), ErrorKind::Io);
    assert!(!back.is_retryable());
    assert_eq!(back.message(), "overflow write failed: disk on fire");
}

#[test]
fn display_shows_kind_message_context_and_source_chain() {
    let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    let err = Error::unavailable("cannot connect to the store")
        .with_context("url", "store://127.0.0.1:1/")
        .with_source(Error::new(ErrorKind::Io, "connect").with_source(inner));
    assert_eq!(
        err.to_string(),
        "unavailable: cannot connect to the store (url: store://127.0.0.1:1/): connect: refused"
    );
    assert_eq!(err.context_value("url"), Some("store://127.0.0.1:1/"));
    assert_eq!(err.message(), "cannot connect to the store");
}

#[test]
fn context_survives_detach_and_the_wire_as_text() {
    let err = Error::timeout("deadline")
        .with_context("service", "Catalog")
        .with_context("method", "price")
        .with_source(std::io::Error::other("slow"));
    let detached = err.to_detached();
    // The source chain is folded into the message; the context stays structured.
    assert_eq!(
        detached.to_string(),
        "timeout: deadline: slow (service: Catalog, method: price)"
    );
    assert_eq!(detached.context_value("service"), Some("Catalog"));
    let back: Error = crate::codec::decode(&crate::codec::encode(&err).unwrap()).unwrap();
    assert_eq!(
        back.message(),
        "deadline (service: Catalog, method: price): slow"
    );
    assert!(back.is_retryable());
}

#[test]
fn a_plain_error_is_small_and_carries_no_box() {
    // Result<T, Error> travels through every call: keep it at most five words.
    assert!(
        std::mem::size_of::<Error>() <= 40,
        "{}",
        std::mem::size_of::<Error>()
    );
    let err = Error::not_found("gone");
    assert!(err.extra.is_none());
    assert_eq!(err.context().count(), 0);
    assert_eq!(err.to_string(), "not_found: gone");
}

#[test]
fn a_cause_already_in_its_parents_text_is_not_repeated() {
    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "client: {}", self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let err = Error::unavailable("store").with_source(Wrapper(std::io::Error::other("refused")));
    assert_eq!(err.to_string(), "unavailable: store: client: refused");
}
