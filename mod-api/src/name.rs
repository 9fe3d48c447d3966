//! The rule for the names of building blocks (caches, queues, session stores,
//! services, instance ids): a leaf module, so that every block's module can
//! check names without importing the backend seam.

use crate::error::{Error, Result};

/// Longest name, in bytes.
const MAX_LEN: usize = 200;

/// Checks a building block's name: non-empty, at most 200 bytes, no
/// whitespace, control characters or `{}` (backends build keys, paths and
/// channel names from names, and braces have a meaning in some key layouts).
/// A bad name is [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
/// naming `what` it is.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_LEN
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}');
    if bad {
        return Err(Error::invalid_input(format!(
            "invalid {what} name {name:?}: 1-{MAX_LEN} bytes, no whitespace, control characters or braces"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn names_within_the_rule_pass_and_others_are_invalid_input() {
        for good in ["orders", "a.b-c_d:e/f", &"x".repeat(MAX_LEN)] {
            assert!(check_name("queue", good).is_ok(), "{good:?}");
        }
        for bad in ["", "a b", "a\tb", "a{b}", "\u{7}", &"x".repeat(MAX_LEN + 1)] {
            let err = check_name("queue", bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("invalid queue name"), "{err}");
        }
    }
}
