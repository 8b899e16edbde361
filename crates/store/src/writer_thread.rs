//! SQLite's writer thread: a thread of its own, with a single-threaded tokio runtime,
//! where the work that holds the one writer connection runs (an action's transaction,
//! the delivery engine's outcome writes).
//!
//! Why: the writer is handed from one waiting task to the next in order, and on the
//! shared runtime the next one was only woken, to be polled once its worker got to it,
//! behind the HTTP connections and the delivery calls queued there. Under load the
//! writer stood idle for a third of the time between holders, about 16 µs per hand-off,
//! while writers waited (`bench --concurrency 128`). Here the tasks queued are the
//! writers themselves, and the next runs as soon as the last lets go.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::StoreError;

/// The writer thread of one database; it stops once the last clone is dropped.
#[derive(Clone)]
pub(crate) struct WriterThread(Arc<Inner>);

struct Inner {
    handle: Handle,
    /// Dropped with the last clone: the thread's runtime then ends.
    _stop: oneshot::Sender<()>,
}

impl WriterThread {
    pub(crate) fn start() -> Result<WriterThread, StoreError> {
        let failed = |e: std::io::Error| StoreError::Corrupt(format!("writer thread: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(failed)?;
        Ok(WriterThread(Arc::new(Inner {
            handle,
            _stop: stop,
        })))
    }

    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.0.handle.spawn(work)
    }
}

/// The result of work run on the writer thread: a panic there goes on here, as if the
/// work had run in the caller's task.
pub(crate) async fn joined<T>(handle: JoinHandle<T>) -> Result<T, StoreError> {
    match handle.await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Corrupt("the database is closed".into())),
    }
}
