//! Rates imports: the file is read twice, streaming — once to validate every line (no
//! transaction, so a bad file never holds the database), once to write all rows in one
//! transaction — so a file of any size imports without being held in memory.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use billhook_domain::entities::{Import, ImportStatus};
use billhook_domain::Timestamp;
use billhook_store::rate_tables::{upsert_rates, NewRate, RATE_BATCH};
use tokio::sync::mpsc;

use super::{Errors, Imports};
use crate::AppError;

/// Batches in flight between the reading thread and the writer.
const BATCHES_AHEAD: usize = 4;

impl Imports {
    pub(super) async fn run_rates(&self, mut job: Import, path: &Path) -> Result<(), AppError> {
        let owned = path.to_path_buf();
        let (total, errors) = tokio::task::spawn_blocking(move || validate(&owned))
            .await
            .map_err(|e| AppError::Internal(format!("validation task: {e}")))?;
        job.rows_total = total;
        if !errors.is_empty() {
            return self.fail(job, errors.into_vec()).await;
        }
        let Some(table) = job.rate_tables_id else {
            let mut e = Errors::default();
            e.add(0, "the rate table of this import was deleted");
            return self.fail(job, e.into_vec()).await;
        };
        // Rows without a start date take effect when the import runs.
        let now = Timestamp::now();
        let (send, mut batches) = mpsc::channel::<Vec<NewRate>>(BATCHES_AHEAD);
        let reader = spawn_reader(path.to_path_buf(), now, send);

        let mut tx = self.db.begin_long().await?;
        let mut written = 0i64;
        while let Some(batch) = batches.recv().await {
            upsert_rates(&mut tx, table, Some(job.id), &batch, now).await?;
            written += batch.len() as i64;
        }
        let read = reader
            .await
            .map_err(|e| AppError::Internal(format!("reading task: {e}")))?;
        if let Err(message) = read {
            // The file changed between the passes (it should not): nothing is written.
            drop(tx);
            let mut e = Errors::default();
            e.add(0, message);
            return self.fail(job, e.into_vec()).await;
        }
        job.status = ImportStatus::Success;
        job.rows_imported = written;
        self.finish_in(&mut tx, &mut job).await?;
        tx.commit().await?;
        self.pipeline.committed();
        tracing::info!(import = job.id, rows = written, "rates import succeeded");
        Ok(())
    }
}

/// Counts the rows and lists the bad lines.
fn validate(path: &Path) -> (i64, Errors) {
    let mut errors = Errors::default();
    let mut total = 0i64;
    let rows = match open(path) {
        Ok(rows) => rows,
        Err((line, message)) => {
            errors.add(line, message);
            return (0, errors);
        }
    };
    for row in rows {
        total += 1;
        if let Err(e) = row {
            errors.add(e.line, e.message);
        }
    }
    (total, errors)
}

/// The rows of the file; an error names its line: 0 for the file, 1 for its header.
fn open(
    path: &Path,
) -> Result<
    impl Iterator<Item = Result<billhook_intake::RateRow, billhook_intake::RowError>>,
    (u64, String),
> {
    let file = File::open(path).map_err(|e| (0, format!("cannot open the uploaded file: {e}")))?;
    billhook_intake::rates(BufReader::with_capacity(1 << 16, file)).map_err(|e| (1, e.to_string()))
}

/// Reads the validated file again on a blocking thread, sending batches of rows.
fn spawn_reader(
    path: PathBuf,
    now: Timestamp,
    send: mpsc::Sender<Vec<NewRate>>,
) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(RATE_BATCH * 4);
        for row in open(&path).map_err(|(_, m)| m)? {
            let row = row.map_err(|e| format!("line {}: {}", e.line, e.message))?;
            batch.push(NewRate {
                prefix: row.prefix,
                rate: row.rate,
                effective_from: row.effective_from.unwrap_or(now),
            });
            if batch.len() == batch.capacity() {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(RATE_BATCH * 4));
                if send.blocking_send(full).is_err() {
                    return Ok(()); // the writer gave up; its error is reported
                }
            }
        }
        if !batch.is_empty() {
            let _ = send.blocking_send(batch);
        }
        Ok(())
    })
}
