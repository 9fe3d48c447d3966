//! The floor of remote invocation: a plain tokio TCP ping-pong of 64 bytes
//! plus a 4-byte length, TCP_NODELAY on both ends.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fixtures::{payload, PAYLOAD};

/// The floor: a plain tokio TCP echo server of 4-byte-length-prefixed frames.
pub async fn tcp_echo_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                loop {
                    // Echo every complete frame in the buffer with one write.
                    let mut end = 0;
                    while have - end >= 4 {
                        let len = u32::from_be_bytes(buf[end..end + 4].try_into().unwrap());
                        let frame = 4 + len as usize;
                        if have - end < frame {
                            break;
                        }
                        end += frame;
                    }
                    if end > 0 {
                        if stream.write_all(&buf[..end]).await.is_err() {
                            return;
                        }
                        buf.copy_within(end..have, 0);
                        have -= end;
                    }
                    match stream.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A client of [`tcp_echo_server`]: one round trip of a 64-byte frame per call.
pub struct TcpEcho {
    stream: TcpStream,
    frame: Vec<u8>,
    reply: Vec<u8>,
}

impl TcpEcho {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpEcho> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut frame = (PAYLOAD as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload());
        let reply = vec![0u8; frame.len()];
        Ok(TcpEcho {
            stream,
            frame,
            reply,
        })
    }

    /// One ping-pong.
    pub async fn round_trip(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.frame).await?;
        self.stream.read_exact(&mut self.reply).await?;
        Ok(())
    }
}
