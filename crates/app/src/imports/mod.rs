//! The Import Manager: CSV files of rates, clients or DIDs imported in the background,
//! all or nothing, ending with `importd.process_success` or `importd.process_failed`.
//!
//! The uploaded file is kept in the imports directory until its job ends. A job is run
//! by the server whose directory holds the file (its *node*, a random id stored in the
//! directory) under a lease: a server killed mid-import left no rows behind (the write is
//! one transaction) and takes the job up again once the lease has run out.

mod rates;
mod rows;
mod runner;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use billhook_domain::entities::{Import, ImportError, ImportKind, ImportStatus};
use billhook_domain::Timestamp;
use billhook_store::{imports as store, rate_tables, Db, Page, Tx};
use serde_json::Map;
use tokio::sync::Notify;

use crate::pipeline::{to_json, NewEvent, Pipeline};
use crate::queries::List;
use crate::AppError;

/// At most this many bad lines are listed; the rest are counted in a last entry.
pub const MAX_LISTED_ERRORS: usize = 10_000;

/// Settings of the import runner.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Where uploaded files wait for their job.
    pub dir: PathBuf,
    /// How long a running job is ours without renewal; a crashed server's job is taken
    /// up again after it.
    pub lease: Duration,
}

/// Queues and runs imports. Cheap to clone.
#[derive(Clone)]
pub struct Imports {
    db: Db,
    pipeline: Pipeline,
    config: Arc<ImportConfig>,
    node: Arc<str>,
    wake: Arc<Notify>,
}

/// What a new job is asked to do.
#[derive(Debug)]
pub struct NewImport {
    pub kind: ImportKind,
    pub rate_tables_id: Option<i64>,
    pub file_name: String,
    /// The file, already in the imports directory (see [`Imports::upload_path`]).
    pub path: PathBuf,
    pub source: &'static str,
}

impl Imports {
    /// Prepares the imports directory and its node id.
    pub fn new(db: Db, pipeline: Pipeline, config: ImportConfig) -> Result<Imports, AppError> {
        let io = |e: std::io::Error| {
            AppError::Internal(format!("imports directory {}: {e}", config.dir.display()))
        };
        std::fs::create_dir_all(&config.dir).map_err(io)?;
        let id_file = config.dir.join("node-id");
        let node = match std::fs::read_to_string(&id_file) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                let id = uuid::Uuid::now_v7().to_string();
                std::fs::write(&id_file, &id).map_err(io)?;
                id
            }
        };
        Ok(Imports {
            db,
            pipeline,
            config: Arc::new(config),
            node: node.into(),
            wake: Arc::new(Notify::new()),
        })
    }

    /// A fresh path in the imports directory for an upload.
    pub fn upload_path(&self) -> PathBuf {
        self.config
            .dir
            .join(format!("{}.upload", uuid::Uuid::now_v7()))
    }

    /// Queues a job for a file already stored at `new.path`; the file is removed if the
    /// job is refused.
    pub async fn enqueue(&self, new: NewImport) -> Result<Import, AppError> {
        let result = self.insert(&new).await;
        if result.is_err() {
            let _ = std::fs::remove_file(&new.path);
        }
        let import = result?;
        self.wake.notify_one();
        Ok(import)
    }

    async fn insert(&self, new: &NewImport) -> Result<Import, AppError> {
        let mut tx = self.db.begin().await?;
        let import = self.insert_in(&mut tx, new).await?;
        tx.commit().await?;
        Ok(import)
    }

    /// Queues a job inside the caller's transaction (the email rates manager records its
    /// message in the same one); call [`Imports::queued`] after the commit.
    pub async fn insert_in(&self, tx: &mut Tx, new: &NewImport) -> Result<Import, AppError> {
        match (new.kind, new.rate_tables_id) {
            (ImportKind::Rates, None) => {
                return Err(AppError::field(
                    "rate_tables_id",
                    "is required for a rates import",
                ))
            }
            (ImportKind::Rates, Some(id)) => {
                if rate_tables::get(tx, id).await?.is_none() {
                    return Err(AppError::field(
                        "rate_tables_id",
                        format!("rate table {id} does not exist"),
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(AppError::field(
                    "rate_tables_id",
                    "is only for a rates import",
                ))
            }
            (_, None) => {}
        }
        let now = Timestamp::now();
        let mut import = Import {
            id: 0,
            kind: new.kind,
            status: ImportStatus::Queued,
            file_name: new.file_name.clone(),
            rows_total: 0,
            rows_imported: 0,
            errors: Vec::new(),
            rate_tables_id: new.rate_tables_id,
            source: new.source.to_string(),
            created_at: now,
            updated_at: now,
        };
        let path = new.path.to_string_lossy();
        import.id = store::insert(tx, &import, &self.node, &path).await?;
        Ok(import)
    }

    /// Wakes the runner after a transaction with [`Imports::insert_in`] committed.
    pub fn queued(&self) {
        self.wake.notify_one();
    }

    /// Loads a job.
    pub async fn get(&self, id: i64) -> Result<Import, AppError> {
        let mut conn = self.db.read.acquire().await?;
        store::get(&mut conn, id)
            .await?
            .ok_or_else(|| AppError::not_found("import", id))
    }

    /// Lists jobs, newest first.
    pub async fn list(
        &self,
        kind: Option<&str>,
        status: Option<&str>,
        rate_tables_id: Option<i64>,
        page: Page,
    ) -> Result<List<Import>, AppError> {
        let mut conn = self.db.read.acquire().await?;
        Ok(store::list(&mut conn, kind, status, rate_tables_id, page)
            .await?
            .into())
    }

    /// Ends a job as failed with `errors`, raising `importd.process_failed`.
    async fn fail(&self, mut job: Import, errors: Vec<ImportError>) -> Result<(), AppError> {
        job.status = ImportStatus::Failed;
        job.rows_imported = 0;
        job.errors = errors;
        let mut tx = self.db.begin().await?;
        self.finish_in(&mut tx, &mut job).await?;
        tx.commit().await?;
        self.pipeline.committed();
        Ok(())
    }

    /// Saves the end of a job and raises its event in the caller's transaction.
    async fn finish_in(&self, tx: &mut Tx, job: &mut Import) -> Result<(), AppError> {
        job.updated_at = Timestamp::now();
        store::save(tx, job).await?;
        let events_id = match job.status {
            ImportStatus::Success => "importd.process_success",
            _ => "importd.process_failed",
        };
        self.pipeline
            .raise(
                tx,
                NewEvent {
                    events_id,
                    object_id: Some(job.id),
                    ordering_key: format!("imports:{}", job.id),
                    data: to_json(&*job)?,
                    previous: Map::new(),
                },
            )
            .await
    }
}

/// A list of bad lines, capped at [`MAX_LISTED_ERRORS`] with a count of the rest.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    listed: Vec<ImportError>,
    more: u64,
}

impl Errors {
    pub(crate) fn add(&mut self, line: u64, message: impl Into<String>) {
        if self.listed.len() < MAX_LISTED_ERRORS {
            self.listed.push(ImportError {
                line,
                message: message.into(),
            });
        } else {
            self.more += 1;
        }
    }

    /// Bad lines seen, listed or not.
    pub(crate) fn count(&self) -> usize {
        self.listed.len() + self.more as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    pub(crate) fn into_vec(mut self) -> Vec<ImportError> {
        if self.more > 0 {
            self.listed.push(ImportError {
                line: 0,
                message: format!(
                    "and {} more bad lines (only the first {MAX_LISTED_ERRORS} are listed)",
                    self.more
                ),
            });
        }
        self.listed
    }
}

/// Removes a job's file once the job has ended; a leftover file is only wasted space.
fn remove_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an import file");
        }
    }
}
