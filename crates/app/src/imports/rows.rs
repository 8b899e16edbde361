//! Clients and DIDs imports: each row is an action of the pipeline (`clients.create`,
//! `dids.create`), so it is validated, passes the before chain and raises its own event
//! exactly as if it had been posted. Every row is prepared first (before handlers are
//! called outside any transaction); only when all are good are they written, in one
//! transaction. Prepared rows are held in memory: client and DID lists are small next to
//! rate decks, which stream.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use billhook_domain::entities::{Client, Did, Import, ImportKind, ImportStatus};
use billhook_intake::FieldRow;
use serde_json::{Map, Value};

use super::{Errors, Imports};
use crate::actions::clients::{ClientInput, CreateClient};
use crate::actions::dids::{DidActionRequest, DidChange, DidInput};
use crate::input::parse_json;
use crate::pipeline::describe;
use crate::prepared::Made;
use crate::AppError;

/// Columns whose values are integers in the API.
const INTEGER_COLUMNS: &[&str] = &["clients_id", "accounts_id", "hold_days"];

/// A row ready to write: its line, its action and the object the chain approved.
enum Prepared {
    Client(u64, CreateClient, Made<Client>),
    Did(u64, DidActionRequest, Made<Did>),
}

impl Imports {
    pub(super) async fn run_rows(&self, mut job: Import, path: &Path) -> Result<(), AppError> {
        let kind = job.kind;
        let owned = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || read_rows(&owned, kind))
            .await
            .map_err(|e| AppError::Internal(format!("reading task: {e}")))?;
        let (rows, mut errors) = read;
        job.rows_total = (rows.len() + errors.count()) as i64;

        let mut prepared = Vec::with_capacity(rows.len());
        for row in rows {
            match self.prepare_row(kind, &row).await {
                Ok(p) => prepared.push(p),
                Err(e) => errors.add(row.line, describe(&e)),
            }
        }
        if !errors.is_empty() {
            return self.fail(job, errors.into_vec()).await;
        }

        let mut tx = self.db.begin_long().await?;
        for p in prepared {
            let written = match p {
                Prepared::Client(line, action, object) => (
                    line,
                    self.pipeline
                        .write_prepared(&mut tx, &action, object)
                        .await
                        .map(|_| ()),
                ),
                Prepared::Did(line, action, object) => (
                    line,
                    self.pipeline
                        .write_prepared(&mut tx, &action, object)
                        .await
                        .map(|_| ()),
                ),
            };
            match written {
                (_, Ok(())) => job.rows_imported += 1,
                (_, Err(AppError::Internal(e))) => return Err(AppError::Internal(e)),
                (line, Err(e)) => errors.add(line, describe(&e)),
            }
        }
        if !errors.is_empty() {
            tx.rollback().await?;
            return self.fail(job, errors.into_vec()).await;
        }
        job.status = ImportStatus::Success;
        self.finish_in(&mut tx, &mut job).await?;
        tx.commit().await?;
        self.pipeline.committed();
        tracing::info!(
            import = job.id,
            rows = job.rows_imported,
            "import succeeded"
        );
        Ok(())
    }

    async fn prepare_row(&self, kind: ImportKind, row: &FieldRow) -> Result<Prepared, AppError> {
        let body = to_json_body(row)?;
        Ok(match kind {
            ImportKind::Clients => {
                let action = CreateClient(parse_json::<ClientInput>(&body)?);
                let object = self.pipeline.prepare_create(&action).await?;
                Prepared::Client(row.line, action, object)
            }
            _ => {
                let action = DidActionRequest {
                    id: 0,
                    change: DidChange::Create,
                    input: parse_json::<DidInput>(&body)?,
                };
                let object = self.pipeline.prepare_create(&action).await?;
                Prepared::Did(row.line, action, object)
            }
        })
    }
}

/// Reads every row of a clients or DIDs file; bad lines go to the errors.
fn read_rows(path: &Path, kind: ImportKind) -> (Vec<FieldRow>, Errors) {
    let mut errors = Errors::default();
    let columns = match kind {
        ImportKind::Clients => &billhook_intake::CLIENT_COLUMNS,
        _ => &billhook_intake::DID_COLUMNS,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            errors.add(0, format!("cannot open the uploaded file: {e}"));
            return (Vec::new(), errors);
        }
    };
    let rows = match billhook_intake::rows(BufReader::new(file), columns) {
        Ok(rows) => rows,
        Err(e) => {
            // The header is line 1.
            errors.add(1, e.to_string());
            return (Vec::new(), errors);
        }
    };
    let mut good = Vec::new();
    for row in rows {
        match row {
            Ok(r) => good.push(r),
            Err(e) => errors.add(e.line, e.message),
        }
    }
    (good, errors)
}

/// The row as the JSON body the API would have received.
fn to_json_body(row: &FieldRow) -> Result<Vec<u8>, AppError> {
    let mut object = Map::new();
    for (column, value) in &row.fields {
        let v = if INTEGER_COLUMNS.contains(&column.as_str()) {
            let n: i64 = value
                .parse()
                .map_err(|_| AppError::field(column, format!("{value:?} is not an integer")))?;
            Value::from(n)
        } else if column == "tags" {
            Value::from(
                value
                    .split(['|', ';'])
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>(),
            )
        } else {
            Value::from(value.as_str())
        };
        object.insert(column.clone(), v);
    }
    Ok(serde_json::to_vec(&Value::Object(object)).expect("serialisable"))
}
