//! An in-process TCP fault proxy: forwards to a local port until cut, then
//! holds what crosses it (a partition, not a refusal).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards `127.0.0.1:<port>` to a node; [`FaultProxy::cut`] makes it
/// silent (bytes are held, nothing is refused: what a partition looks like).
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: String,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = flag.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::select! {
                        _ = pipe(cr, uw, cut.clone()) => {}
                        _ = pipe(ur, cw, cut) => {}
                    }
                });
            }
        });
        FaultProxy { addr, cut, task }
    }

    /// Cuts (`true`) or heals the link.
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while not cut; while cut, holds what it read.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while cut.load(Ordering::SeqCst) {
            // A healed link drops what crossed it while cut (as TCP would
            // after its retransmissions gave up): the connection ends.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if !cut.load(Ordering::SeqCst) {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
