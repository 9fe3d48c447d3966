//! What the fuzz runner feeds: each target turns one input into calls of the
//! code that decodes bytes from outside the process.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use modkit::codec::{Bincode, Codec};
use modkit::distribute::rpc::frame::{self, Request, Status};
use modkit::distribute::rpc::RpcServer;
use modkit::monolith::MemoryQueue;
use modkit::{
    BacklogPolicy, Consumer, Error, Instance, Queue, QueueConfig, QueueExt, Session, SessionId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How one input came out: decoded (or accepted), or refused with an error.
pub enum Outcome {
    Ok,
    Refused,
}

fn outcome<T, E>(r: Result<T, E>) -> Outcome {
    if r.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Refused
    }
}

/// Valid encodings of the types RPC and the blocks decode.
pub fn codec_seeds() -> Vec<Vec<u8>> {
    let instance = Instance::new("shop.Orders", "node-1", "127.0.0.1:7000");
    let session = Session {
        id: SessionId::generate().expect("randomness"),
        principal: "alice".to_string(),
        data: "cart: 3 items".to_string(),
        version: 4,
        created_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_100_000,
    };
    let error = Error::timeout("deadline passed");
    let reply: Result<String, Error> = Ok("done".into());
    let args = ("text".to_string(), vec![1u8, 2, 3], 7u64);
    let mut seeds = Vec::new();
    let mut add = |bytes: modkit::Result<Vec<u8>>| seeds.push(bytes.expect("encode a seed"));
    add(Bincode::encode(&instance));
    add(Bincode::encode(&session));
    add(Bincode::encode(&error));
    add(Bincode::encode(&reply));
    add(Bincode::encode(&args));
    #[cfg(feature = "postcard")]
    {
        use modkit::codec::Postcard;
        add(Postcard::encode(&instance));
        add(Postcard::encode(&session));
        add(Postcard::encode(&error));
        add(Postcard::encode(&args));
    }
    seeds
}

/// `codec::decode` of every type, with each codec this build has.
pub fn codec(input: &[u8]) -> Outcome {
    fn all<C: Codec>(input: &[u8]) -> bool {
        let mut ok = C::decode::<Instance>(input).is_ok();
        ok |= C::decode::<Session<String>>(input).is_ok();
        ok |= C::decode::<Error>(input).is_ok();
        ok |= C::decode::<Result<String, Error>>(input).is_ok();
        ok |= C::decode::<(String, Vec<u8>, u64)>(input).is_ok();
        ok |= C::decode::<SessionId>(input).is_ok();
        ok |= C::decode::<Vec<String>>(input).is_ok();
        ok |= C::decode::<BTreeMap<String, Vec<u8>>>(input).is_ok();
        ok |= C::decode::<Option<Vec<u64>>>(input).is_ok();
        ok
    }
    let ok = all::<Bincode>(input);
    #[cfg(feature = "postcard")]
    let ok = ok | all::<modkit::codec::Postcard>(input);
    if ok {
        Outcome::Ok
    } else {
        Outcome::Refused
    }
}

/// Valid frames of every kind.
pub fn frame_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut f = Vec::new();
    frame::encode_hello(&mut f, b"s3cret").expect("hello");
    seeds.push(std::mem::take(&mut f));
    frame::encode_request(&mut f, &request(9, b"\x04text"), 1 << 20).expect("request");
    seeds.push(std::mem::take(&mut f));
    frame::encode_response(&mut f, 9, Status::Ok, b"\x00\x04done");
    seeds.push(std::mem::take(&mut f));
    frame::encode_cancel(&mut f, 9);
    seeds.push(std::mem::take(&mut f));
    frame::encode_goaway(&mut f);
    seeds.push(std::mem::take(&mut f));
    frame::encode_ping(&mut f);
    seeds.push(f);
    seeds
}

fn request(call_id: u64, payload: &[u8]) -> Request<'_> {
    Request {
        call_id,
        deadline_ms: 1000,
        service: "fuzz.Nothing",
        method: "echo",
        payload,
    }
}

/// The frame decoder, as the reader of either side calls it.
pub fn frame(input: &[u8]) -> Outcome {
    let whole = frame::decode(input, 1 << 20);
    let body = frame::decode_body(input);
    let layout = frame::request_layout(input);
    let ok = matches!(whole, Ok(Some(_))) || body.is_ok() || layout.is_ok();
    if ok {
        Outcome::Ok
    } else {
        Outcome::Refused
    }
}

/// A real RPC server with a secret, for the handshake target.
pub async fn handshake_server() -> RpcServer {
    let config = modkit::distribute::RpcConfig {
        secret: Some("s3cret".into()),
        ..Default::default()
    };
    RpcServer::bind(&config, modkit::DispatchTable::new())
        .await
        .expect("bind")
}

/// Handshake seeds: a good HELLO followed by frames, a wrong secret, a bare HELLO.
pub fn handshake_seeds() -> Vec<Vec<u8>> {
    let mut good = Vec::new();
    frame::encode_hello(&mut good, b"s3cret").expect("hello");
    let mut seeds = vec![good.clone()];
    let mut wrong = Vec::new();
    frame::encode_hello(&mut wrong, b"guess").expect("hello");
    seeds.push(wrong);
    for tail in frame_seeds().into_iter().skip(1) {
        let mut s = good.clone();
        s.extend_from_slice(&tail);
        seeds.push(s);
    }
    seeds
}

/// Sends one input on a new connection, half-closes, reads until the server
/// closes (or 200 ms pass), then resets the connection (no TIME_WAIT).
pub async fn handshake(addr: &str, input: &[u8]) -> Outcome {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Outcome::Refused;
    };
    let _ = stream.set_zero_linger();
    let _ = stream.write_all(input).await;
    let _ = stream.shutdown().await;
    let mut answered = false;
    let mut buf = [0u8; 512];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => answered = true,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), read).await;
    if answered {
        Outcome::Ok
    } else {
        Outcome::Refused
    }
}

/// A spill folder of queue `fuzz` with a few spilled messages, as seed bytes.
pub async fn spill_seeds(root: &Path) -> Vec<Vec<u8>> {
    let q = MemoryQueue::<String>::open_with_spill_dir("fuzz", spill_config(), None, Some(root))
        .expect("open");
    for i in 0..6 {
        q.offer(format!("message {i}")).await.expect("offer");
    }
    drop(q);
    let folder = root.join("fuzz");
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(&folder).expect("spill folder").flatten() {
        seeds.push(std::fs::read(entry.path()).expect("segment"));
        let _ = std::fs::remove_file(entry.path());
    }
    seeds
}

fn spill_config() -> QueueConfig {
    QueueConfig {
        capacity: 1,
        backlog: BacklogPolicy::Overflow,
        ..QueueConfig::default()
    }
}

/// Writes `input` as the only segment of queue `fuzz`, recovers it, drains it.
pub async fn spill(root: &Path, input: &[u8]) -> Outcome {
    let folder = root.join("fuzz");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("spill folder");
    std::fs::write(folder.join(format!("{:020}.spill", 0)), input).expect("segment");
    let q = match MemoryQueue::<String>::open_with_spill_dir(
        "fuzz",
        spill_config(),
        None,
        Some(root),
    ) {
        Ok(q) => q,
        Err(_) => return Outcome::Refused,
    };
    let consumer = Consumer::new("g", "c");
    let mut drained = 0;
    while let Ok(Some(d)) = q.poll(&consumer).await {
        let _ = q.ack_delivery(&d).await;
        drained += 1;
    }
    outcome(if drained > 0 { Ok(()) } else { Err(()) })
}
