//! The background runner: one job at a time per server, woken when a job is queued.

use std::path::PathBuf;
use std::time::Duration;

use billhook_domain::entities::{Import, ImportError, ImportKind};
use billhook_domain::Timestamp;
use billhook_store::imports as store;
use tokio::sync::watch;

use super::Imports;
use crate::AppError;

/// Looks for queued work this often even without a wake-up (another process may have
/// queued it, and expired leases need no wake-up at all).
const POLL: Duration = Duration::from_secs(2);

impl Imports {
    /// Runs jobs until `stop` turns true; a job in progress is finished first (its write
    /// is one transaction, so stopping halfway would only waste it).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            match self.claim().await {
                Ok(Some((job, path))) => {
                    self.run_job(job, PathBuf::from(path)).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not look for import jobs"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn claim(&self) -> Result<Option<(Import, String)>, AppError> {
        let now = Timestamp::now();
        let until = lease_end(now, self.config.lease);
        let mut conn = self.db.write.acquire().await?;
        Ok(store::claim(&mut conn, &self.node, now, until).await?)
    }

    async fn run_job(&self, job: Import, path: PathBuf) {
        let id = job.id;
        tracing::info!(import = id, kind = job.kind.as_str(), file = %job.file_name, "import started");
        let keep_lease = self.keep_lease(id);
        let result = match job.kind {
            ImportKind::Rates => self.run_rates(job.clone(), &path).await,
            ImportKind::Clients | ImportKind::Dids => self.run_rows(job.clone(), &path).await,
        };
        keep_lease.abort();
        match result {
            Ok(()) => super::remove_file(&path),
            Err(e) => {
                // Not the file's fault (the database went away): fail the job rather than
                // leave it processing; the operator can upload the file again.
                tracing::error!(import = id, error = %e, "import could not run");
                let errors = vec![ImportError {
                    line: 0,
                    message: format!("the import could not run: {e}"),
                }];
                match self.fail(job, errors).await {
                    Ok(()) => super::remove_file(&path),
                    Err(e) => {
                        tracing::error!(import = id, error = %e, "could not record the failure")
                    }
                }
            }
        }
    }

    /// Renews the job's lease while it runs.
    fn keep_lease(&self, id: i64) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let every = this.config.lease / 3;
            loop {
                tokio::time::sleep(every).await;
                let until = lease_end(Timestamp::now(), this.config.lease);
                let renewed = async {
                    let mut conn = this.db.write.acquire().await?;
                    store::extend(&mut conn, id, until).await
                };
                if let Err(e) = renewed.await {
                    tracing::warn!(import = id, error = %e, "could not renew the import lease");
                }
            }
        })
    }
}

fn lease_end(now: Timestamp, lease: Duration) -> Timestamp {
    Timestamp::from_micros(now.micros() + lease.as_micros() as i64)
}
