//! Key building: every key modkit writes is `<prefix>:<part>:<part>…` (the
//! layout is in the crate docs, "Key layout"), and a building block's name is
//! one escaped part, so no name can forge another's keys.

use redis::{RedisWrite, ToRedisArgs};

/// `base:<part>:<part>…`, allocated once.
pub(crate) fn join(base: &str, parts: &[&str]) -> String {
    let len = base.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut key = String::with_capacity(len);
    key.push_str(base);
    for part in parts {
        key.push(':');
        key.push_str(part);
    }
    key
}

/// A building block's name as one key segment: `%` and `:` are escaped so that
/// no name can forge another's keys (`a:k:b` vs `a` + key `b:k:…`).
pub(crate) fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

/// Two strings written as one argument (a key base and a user key) without
/// building the joined `String` first: the per-operation keys of cache and
/// session cost no allocation.
pub(crate) struct Joined<'a>(pub &'a str, pub &'a str);

impl ToRedisArgs for Joined<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut w = out.writer_for_next_arg();
        // Writing into the command's own Vec cannot fail.
        let _ = w.write_all(self.0.as_bytes());
        let _ = w.write_all(self.1.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_forge_keys() {
        assert_eq!(segment("a%b:c"), "a%25b%3Ac");
        assert_eq!(
            join("p", &["cache", &segment("a:k"), "k", ""]),
            "p:cache:a%3Ak:k:"
        );
        assert_eq!(join("p", &[]), "p");
        let mut cmd = redis::Cmd::new();
        cmd.arg(Joined("p:sess:s:", "id"));
        assert_eq!(cmd.args_iter().count(), 1);
        assert!(matches!(
            cmd.args_iter().next(),
            Some(redis::Arg::Simple(b"p:sess:s:id"))
        ));
    }
}
