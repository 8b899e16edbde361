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
use tokio_util::task::TaskTracker;

use crate::StoreError;

/// The writer thread of one database; it stops once the last clone is dropped.
#[derive(Clone)]
pub(crate) struct WriterThread(Arc<Inner>);

struct Inner {
    handle: Handle,
    /// The short tasks run there, waited for before the database closes.
    tasks: TaskTracker,
    /// Dropped with the last clone: the thread's runtime then ends.
    _stop: oneshot::Sender<()>,
}

impl WriterThread {
    pub(crate) fn start() -> Result<WriterThread, StoreError> {
        let failed = |e: std::io::Error| StoreError::Corrupt(format!("writer thread: {e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let (started, handle) = std::sync::mpsc::channel();
        // The runtime is made, run and dropped on the thread itself: dropped in the
        // caller's async context, a runtime panics.
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // Timers only, no I/O driver: what runs here does no socket I/O, and
                // with one, each task sent here from another thread cost a system call
                // (a write to its wake-up eventfd), even with the thread busy: 1.5
                // per event under load. Without, it is an atomic unless the thread sleeps.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(failed)?;
        // Waits only for the new thread to build its runtime.
        let handle = handle
            .recv()
            .map_err(|_| StoreError::Corrupt("writer thread: it ended at once".into()))?
            .map_err(failed)?;
        Ok(WriterThread(Arc::new(Inner {
            handle,
            tasks: TaskTracker::new(),
            _stop: stop,
        })))
    }

    /// Runs short work there (a transaction), waited for by [`WriterThread::finish`].
    pub(crate) fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.0.tasks.spawn_on(work, &self.0.handle)
    }

    /// Spawns a task there that runs as long as its owner wants (the outcome writer).
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.0.handle.spawn(work)
    }

    /// Waits for the short work started there: an action whose client went away still
    /// runs to its end, and the database must not close under it.
    pub(crate) async fn finish(&self) {
        self.0.tasks.close();
        self.0.tasks.wait().await;
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
