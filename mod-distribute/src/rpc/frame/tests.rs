//! Round trips and a property test: no input makes the decoder panic.

use super::*;

const MAX: usize = 1 << 16;

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn samples() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = Vec::new();
    let req = Request {
        call_id: 7,
        deadline_ms: 1500,
        service: "svc",
        method: "m",
        payload: b"args",
    };
    encode_request(&mut b, &req, MAX).unwrap();
    out.push(std::mem::take(&mut b));
    encode_response(&mut b, 7, Status::Ok, b"reply");
    out.push(std::mem::take(&mut b));
    encode_response(&mut b, 8, Status::Refused, b"");
    out.push(std::mem::take(&mut b));
    encode_hello(&mut b, b"s3cret").unwrap();
    out.push(std::mem::take(&mut b));
    encode_cancel(&mut b, 9);
    out.push(std::mem::take(&mut b));
    encode_goaway(&mut b);
    out.push(b);
    out
}

#[test]
fn frames_round_trip() {
    let s = samples();
    let (f, used) = decode(&s[0], MAX).unwrap().unwrap();
    assert_eq!(used, s[0].len());
    match f {
        Frame::Request(r) => {
            assert_eq!((r.call_id, r.deadline_ms), (7, 1500));
            assert_eq!((r.service, r.method, r.payload), ("svc", "m", &b"args"[..]));
        }
        other => panic!("{other:?}"),
    }
    let (f, _) = decode(&s[1], MAX).unwrap().unwrap();
    assert_eq!(
        f,
        Frame::Response {
            call_id: 7,
            status: Status::Ok,
            data: b"reply"
        }
    );
    assert_eq!(
        decode(&s[3], MAX).unwrap().unwrap().0,
        Frame::Hello { secret: b"s3cret" }
    );
    assert_eq!(
        decode(&s[4], MAX).unwrap().unwrap().0,
        Frame::Cancel { call_id: 9 }
    );
    assert_eq!(decode(&s[5], MAX).unwrap().unwrap().0, Frame::GoAway);
}

#[test]
fn ping_and_the_hello_answer_with_its_idle_timeout() {
    let mut b = Vec::new();
    encode_ping(&mut b);
    assert_eq!(decode(&b, MAX).unwrap().unwrap(), (Frame::Ping, b.len()));
    let mut b = Vec::new();
    encode_hello_ok(&mut b, 60_000);
    match decode(&b, MAX).unwrap().unwrap().0 {
        Frame::Response {
            call_id: 0,
            status: Status::Ok,
            data,
        } => assert_eq!(hello_idle_ms(data), 60_000),
        other => panic!("{other:?}"),
    }
    // The empty answer of an older server: no idle timeout.
    assert_eq!(hello_idle_ms(&[]), 0);
    // A PING with a body is malformed.
    let mut b = Vec::new();
    encode_ping(&mut b);
    b[3] += 1;
    b.push(0);
    assert!(decode(&b, MAX).is_err());
}

#[test]
fn oversized_request_is_refused_on_write() {
    let mut b = Vec::new();
    let payload = vec![0u8; 100];
    let req = Request {
        call_id: 1,
        deadline_ms: 0,
        service: "s",
        method: "m",
        payload: &payload,
    };
    let e = encode_request(&mut b, &req, 50).unwrap_err();
    assert!(matches!(e, FrameError::TooLarge { .. }));
    assert!(b.is_empty());
    assert_eq!(Error::from(e).kind(), ErrorKind::PayloadTooLarge);
}

#[test]
fn oversized_length_prefix_is_refused_before_reading() {
    let buf = u32::MAX.to_be_bytes();
    assert!(matches!(
        decode(&buf, MAX),
        Err(FrameError::TooLarge { .. })
    ));
}

/// Property: random bytes, truncations and single-byte mutations of valid
/// frames never panic; truncations are "need more" or an error, never a frame.
#[test]
fn decoder_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let n = (rng.next() % 64) as usize;
        let mut bytes = rng.bytes(n);
        let _ = decode(&bytes, MAX);
        let _ = decode_body(&bytes);
        // Plausible prefix and head, random rest: reaches the kind parsers.
        if n >= LEN_PREFIX + HEAD_LEN {
            bytes[..4].copy_from_slice(&((n - 4) as u32).to_be_bytes());
            bytes[4] = VERSION;
            bytes[5] = 1 + (rng.next() % 5) as u8;
            let _ = decode(&bytes, MAX);
        }
    }
    for frame in samples() {
        for cut in 0..frame.len() {
            assert!(
                !matches!(decode(&frame[..cut], MAX), Ok(Some(_))),
                "cut {cut}"
            );
            let _ = decode_body(&frame[LEN_PREFIX.min(cut)..cut]);
        }
        for _ in 0..2_000 {
            let mut m = frame.clone();
            let at = (rng.next() as usize) % m.len();
            m[at] = rng.next() as u8;
            let _ = decode(&m, MAX);
        }
    }
}
