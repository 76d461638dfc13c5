//! An error and its sources as one line of text (`outer: inner: innermost`), for logs and for
//! the reasons typed errors carry: many libraries' own text says only which step failed, and
//! the cause is in the sources.

/// `error`'s text and its sources', `: `-separated.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_sources_follow_the_error() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(describe(&Outer(refused)), "client error (Connect): refused");
    }
}
