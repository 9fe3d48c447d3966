//! Group commit: concurrent calls of one kind share a script call.
//!
//! A call queues its request. When no worker runs, it spawns one; the worker
//! sends everything queued as one batch (one `EVALSHA`, one round trip), answers
//! each caller, and repeats until the queue is empty. Under no load a request
//! goes out at once, alone; under load the batch grows with what arrived during
//! the previous round trip, which spreads the cost of a script call (and of the
//! client's command handling) over many requests. A caller that gives up only
//! drops its answer: the batch still runs for everyone else (a request not yet
//! sent when its caller gave up is dropped).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use mod_api::{Error, Result};
use tokio::sync::oneshot;

/// Most requests in one script call (bounds how long Redis runs one script).
const MAX_BATCH: usize = 128;
/// A batch stops growing past this many bytes of requests (big messages go
/// out in small batches, at least one each).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// One kind of request that can be answered in batches.
pub(super) trait Batch: Send + Sync + 'static {
    /// One caller's request.
    type Req: Send + 'static;
    /// One caller's answer.
    type Resp: Send + 'static;

    /// The payload bytes of `req`, to bound a batch's size.
    fn size(_req: &Self::Req) -> usize {
        0
    }

    /// Answers `reqs`, one answer per request in order.
    fn run<'a>(
        &'a self,
        reqs: &'a [Self::Req],
    ) -> impl Future<Output = Result<Vec<Self::Resp>>> + Send + 'a;
}

type Job<B> = (
    <B as Batch>::Req,
    oneshot::Sender<Result<<B as Batch>::Resp>>,
);

struct State<B: Batch> {
    jobs: VecDeque<Job<B>>,
    running: bool,
}

struct Shared<B: Batch> {
    batch: B,
    state: Mutex<State<B>>,
}

impl<B: Batch> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Batches the requests of `B`.
pub(super) struct Batcher<B: Batch> {
    shared: Arc<Shared<B>>,
}

impl<B: Batch> Batcher<B> {
    /// A batcher running `batch`.
    pub(super) fn new(batch: B) -> Self {
        Batcher {
            shared: Arc::new(Shared {
                batch,
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    running: false,
                }),
            }),
        }
    }

    /// The answer to `req`, sent in the next batch.
    pub(super) async fn call(&self, req: B::Req) -> Result<B::Resp> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::internal("modkit queues must be used inside a tokio runtime"))?;
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.shared.lock();
            state.jobs.push_back((req, tx));
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            runtime.spawn(work(self.shared.clone()));
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::unavailable("queue worker stopped before answering")))
    }
}

/// Clears `running` if the worker is dropped mid-batch (runtime shut down), so
/// the next call starts a new one for the jobs still queued.
struct Running<B: Batch>(Option<Arc<Shared<B>>>);

impl<B: Batch> Drop for Running<B> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.lock().running = false;
        }
    }
}

async fn work<B: Batch>(shared: Arc<Shared<B>>) {
    let mut guard = Running(Some(shared.clone()));
    loop {
        let jobs: Vec<Job<B>> = {
            let mut state = shared.lock();
            if state.jobs.is_empty() {
                state.running = false;
                guard.0 = None;
                return;
            }
            let (mut n, mut bytes) = (0, 0);
            while n < state.jobs.len().min(MAX_BATCH) && (n == 0 || bytes < MAX_BATCH_BYTES) {
                bytes += B::size(&state.jobs[n].0);
                n += 1;
            }
            state.jobs.drain(..n).collect()
        };
        // A caller that gave up before its request went out is not served: a
        // poll for nobody would hide a message until its visibility timeout.
        let (reqs, answers): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .filter(|(_, answer)| !answer.is_closed())
            .unzip();
        if reqs.is_empty() {
            continue;
        }
        match shared.batch.run(&reqs).await {
            Ok(resps) if resps.len() == answers.len() => {
                for (answer, resp) in answers.into_iter().zip(resps) {
                    let _ = answer.send(Ok(resp));
                }
            }
            Ok(resps) => {
                tracing::error!(
                    sent = answers.len(),
                    got = resps.len(),
                    "batch answer of the wrong length"
                );
                for answer in answers {
                    let _ = answer.send(Err(Error::internal("batch answer of the wrong length")));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.to_detached()));
                }
            }
        }
    }
}
