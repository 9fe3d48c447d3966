//! The stored form of a session: a fixed-width ASCII header, so that the Lua
//! scripts read and rewrite it with `string.sub`/`string.format`, and an
//! operator can read it with `redis-cli GET`.
//!
//! | bytes | field |
//! |-------|-------|
//! | 0..15 | created, ms since the Unix epoch (Redis clock), zero-padded |
//! | 15..30 | last seen, ms, zero-padded |
//! | 30..50 | version, zero-padded |
//! | 50..55 | principal length in bytes, zero-padded |
//! | 55..55+n | principal (UTF-8) |
//! | rest | data (codec bytes) |

use mod_api::{Error, Result};

const HEADER: usize = 55;
/// Longest principal a record holds (5 decimal digits of length).
pub(crate) const MAX_PRINCIPAL: usize = 99_999;

/// A parsed record, borrowing its text and data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) created_ms: u64,
    pub(crate) last_seen_ms: u64,
    pub(crate) version: u64,
    pub(crate) principal: &'a str,
    /// Empty when the record was returned without its data.
    pub(crate) data: &'a [u8],
}

/// What `create` sends after the header the script writes: principal length,
/// principal, data.
pub(crate) fn body(principal: &str, data: &[u8]) -> Result<Vec<u8>> {
    if principal.len() > MAX_PRINCIPAL {
        return Err(Error::invalid_input(format!(
            "principal of {} bytes: at most {MAX_PRINCIPAL}",
            principal.len()
        )));
    }
    let mut out = Vec::with_capacity(5 + principal.len() + data.len());
    out.extend_from_slice(format!("{:05}", principal.len()).as_bytes());
    out.extend_from_slice(principal.as_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// A zero-padded decimal field (on every `validate`: no UTF-8 pass, no `str::parse`).
fn number(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Parses a record of store `store` (named in the error).
pub(crate) fn parse<'a>(store: &str, bytes: &'a [u8]) -> Result<Record<'a>> {
    let corrupt = || {
        tracing::warn!(%store, len = bytes.len(), "corrupt session record");
        Error::codec(format!("session store {store:?}: corrupt session record"))
    };
    let field = |from: usize, to: usize| bytes.get(from..to).and_then(number);
    let (Some(created_ms), Some(last_seen_ms), Some(version), Some(len)) = (
        field(0, 15),
        field(15, 30),
        field(30, 50),
        field(50, HEADER),
    ) else {
        return Err(corrupt());
    };
    let end = HEADER + len as usize;
    let principal = bytes
        .get(HEADER..end)
        .and_then(|p| std::str::from_utf8(p).ok())
        .ok_or_else(corrupt)?;
    Ok(Record {
        created_ms,
        last_seen_ms,
        version,
        principal,
        data: &bytes[end..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_scripts_write_and_rejects_garbage() {
        let mut v = b"00170000000012300170000000045600000000000000000007".to_vec();
        v.extend(body("bob", b"\x01\x02").unwrap());
        let r = parse("s", &v).unwrap();
        assert_eq!(
            r,
            Record {
                created_ms: 1_700_000_000_123,
                last_seen_ms: 1_700_000_000_456,
                version: 7,
                principal: "bob",
                data: b"\x01\x02"
            }
        );
        let mut signed = v.clone();
        signed[0] = b'+';
        for bad in [&b""[..], b"garbage", &v[..54], &v[..57], &signed] {
            assert!(parse("s", bad).is_err());
        }
        assert!(body(&"x".repeat(MAX_PRINCIPAL + 1), b"").is_err());
    }
}
