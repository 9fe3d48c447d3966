//! The record framing of spill files (the format is documented in
//! [`super::spill`]), recovery's scan over a damaged file, and folder names.

use std::path::Path;

use mod_api::{Error, ErrorKind, Result};

pub(super) const MAGIC: [u8; 4] = *b"MKQ1";
pub(super) const HEADER: usize = 12;
pub(super) const MIN_PAYLOAD: usize = 9;
pub(super) const KIND_MESSAGE: u8 = 0;
pub(super) const KIND_DONE: u8 = 1;

/// A record parsed from bytes.
pub(super) struct Record<'a> {
    pub kind: u8,
    pub seq: u64,
    pub body: &'a [u8],
    pub len: usize,
}

/// Parses the record at the start of `buf`, or says why there is none.
pub(super) fn parse(buf: &[u8]) -> Result<Record<'_>, &'static str> {
    if buf.len() < HEADER {
        return Err("truncated record header");
    }
    if buf[..4] != MAGIC {
        return Err("bad magic");
    }
    let len_bytes = [buf[4], buf[5], buf[6], buf[7]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if len < MIN_PAYLOAD {
        return Err("bad record length");
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Err("truncated record");
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Err("crc mismatch");
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&payload[1..9]);
    Ok(Record {
        kind: payload[0],
        seq: u64::from_le_bytes(seq),
        body: &payload[9..],
        len: HEADER + len,
    })
}

/// Frames one record.
pub(super) fn frame(kind: u8, seq: u64, body: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(MIN_PAYLOAD + body.len())
        .map_err(|_| Error::new(ErrorKind::PayloadTooLarge, "message too large to spill"))?;
    let mut out = Vec::with_capacity(HEADER + len as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out[4..8]);
    hasher.update(&out[HEADER..]);
    let crc = hasher.finalize();
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The folder name of queue `name`: safe as a single path component.
pub(super) fn folder_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if out.chars().all(|c| c == '.') {
        // "." and ".." are not folders of their own.
        out = out.replace('.', "%2E");
    }
    out
}

/// Calls `each(offset, record)` for every intact record of `bytes` (read from
/// `path`), in order. Damage is reported with `tracing::error!` and skipped: the
/// scan goes on at the next offset where an intact record starts. Returns how
/// many damaged spots it skipped.
pub(super) fn scan<'a>(
    path: &Path,
    bytes: &'a [u8],
    mut each: impl FnMut(usize, Record<'a>),
) -> usize {
    let mut damaged = 0;
    let mut offset = 0;
    while offset < bytes.len() {
        match parse(&bytes[offset..]) {
            Ok(record) => {
                let len = record.len;
                each(offset, record);
                offset += len;
            }
            Err(reason) => {
                damaged += 1;
                tracing::error!(file = %path.display(), offset, reason, "corrupt spill record skipped");
                match (offset + 1..bytes.len()).find(|&o| parse(&bytes[o..]).is_ok()) {
                    Some(next) => offset = next,
                    None => return damaged,
                }
            }
        }
    }
    damaged
}
