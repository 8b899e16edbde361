//! The Email Rates Manager: rate decks that carriers send by email. Each message (from
//! an IMAP mailbox, the API or an MTA pipe) is matched to rate tables by sender and
//! subject and leads to exactly one outcome per matching table: no attachment, an
//! unreadable file, a hand-over to the operator's `email_rates_manager.import` handler,
//! or a rates import job — or, when no table matches, `rate_tables_no_match`.
//!
//! A message is handled once: its key (the mailbox's UID, else its Message-ID, else a
//! hash of its bytes) is recorded in the transaction of its events.

use base64::Engine;
use billhook_domain::entities::{ImportKind, RateTable};
use billhook_domain::Timestamp;
use billhook_intake::{Message, RateFile};
use billhook_store::{email_messages, handlers, rate_tables, Db};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::Digest;

use crate::imports::{Imports, NewImport};
use crate::pipeline::{NewEvent, Pipeline};
use crate::AppError;

/// Handles rate-deck messages. Cheap to clone.
#[derive(Clone)]
pub struct EmailRates {
    db: Db,
    pipeline: Pipeline,
    imports: Imports,
}

/// What became of one message for one rate table (or of the message, when none
/// matched).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    /// `rate_tables_no_match`, `no_attachments`, `file_processing_error`, `import`
    /// (handed to the handler) or `import_queued`.
    pub outcome: &'static str,
    pub rate_tables_id: Option<i64>,
    pub file_name: Option<String>,
    pub reason: Option<String>,
    pub imports_id: Option<i64>,
}

/// The answer to one message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub source_key: String,
    pub message_id: Option<String>,
    pub sender: String,
    pub subject: String,
    /// True when the message had been handled before: nothing was done again.
    pub duplicate: bool,
    pub outcomes: Vec<Outcome>,
}

/// A step decided before the transaction: an event, or an import (file already saved).
enum Step {
    Event(&'static str, Outcome, Value),
    Import(Outcome, NewImport),
}

impl EmailRates {
    pub fn new(db: Db, pipeline: Pipeline, imports: Imports) -> EmailRates {
        EmailRates {
            db,
            pipeline,
            imports,
        }
    }

    /// Handles one raw RFC 822 message. `source_key` identifies it at its source (an
    /// IMAP UID); without one the Message-ID, else a hash of the bytes, is used.
    pub async fn ingest(&self, raw: &[u8], source_key: Option<String>) -> Result<Report, AppError> {
        let now = Timestamp::now();
        let parsed = billhook_intake::parse_message(raw);
        let message = match &parsed {
            Ok(m) => m.clone(),
            Err(_) => Message::default(),
        };
        let source_key = source_key.unwrap_or_else(|| match &message.message_id {
            Some(id) => format!("message-id:{id}"),
            None => format!("sha256:{}", hex::encode(sha2::Sha256::digest(raw))),
        });
        let mut report = Report {
            source_key: source_key.clone(),
            message_id: message.message_id.clone(),
            sender: message.sender.clone(),
            subject: message.subject.clone(),
            duplicate: false,
            outcomes: Vec::new(),
        };

        let tables = {
            let mut conn = self.db.read.acquire().await?;
            rate_tables::with_email(&mut conn).await?
        };
        let matching: Vec<RateTable> = match &parsed {
            Ok(m) => tables
                .into_iter()
                .filter(|t| t.matches_email(&m.sender, &m.subject))
                .collect(),
            Err(_) => Vec::new(),
        };
        let steps = if matching.is_empty() {
            let reason = match &parsed {
                Ok(_) => {
                    "No rate table's email_sender and email_subject match the message".to_string()
                }
                Err(e) => format!("The message could not be read: {e}"),
            };
            let outcome = Outcome {
                outcome: "rate_tables_no_match",
                rate_tables_id: None,
                file_name: None,
                reason: Some(reason),
                imports_id: None,
            };
            let data = event_data(&message, None, &outcome, now);
            vec![Step::Event(
                "email_rates_manager.rate_tables_no_match",
                outcome,
                data,
            )]
        } else {
            self.plan(&message, &matching, now).await?
        };

        // Files saved for import jobs are removed again if the transaction fails.
        let saved: Vec<std::path::PathBuf> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Import(_, n) => Some(n.path.clone()),
                Step::Event(..) => None,
            })
            .collect();
        let result = self
            .commit(&message, &source_key, steps, now, &mut report)
            .await;
        if result.is_err() || report.duplicate {
            for p in saved {
                let _ = std::fs::remove_file(p);
            }
        }
        result?;
        Ok(report)
    }

    /// Decides the outcome for each matching table.
    async fn plan(
        &self,
        message: &Message,
        tables: &[RateTable],
        now: Timestamp,
    ) -> Result<Vec<Step>, AppError> {
        let files = billhook_intake::rate_files(message);
        let handed_over = {
            let mut conn = self.db.read.acquire().await?;
            handlers::subscribed_after(&mut conn, "email_rates_manager.import").await?
        };
        let mut steps = Vec::new();
        for table in tables {
            let outcome = |outcome, file_name: Option<String>, reason: Option<String>| Outcome {
                outcome,
                rate_tables_id: Some(table.id),
                file_name,
                reason,
                imports_id: None,
            };
            match &files {
                Err(e) => {
                    let o = outcome(
                        "file_processing_error",
                        Some(e.file_name.clone()),
                        Some(e.reason.clone()),
                    );
                    let data = event_data(message, Some(table), &o, now);
                    steps.push(Step::Event(
                        "email_rates_manager.file_processing_error",
                        o,
                        data,
                    ));
                }
                Ok(files) if files.is_empty() => {
                    let o = outcome(
                        "no_attachments",
                        None,
                        Some("The message has no CSV or ZIP attachment".into()),
                    );
                    let data = event_data(message, Some(table), &o, now);
                    steps.push(Step::Event("email_rates_manager.no_attachments", o, data));
                }
                Ok(files) => {
                    for file in files {
                        steps.push(if handed_over {
                            let o = outcome("import", Some(file.file_name.clone()), None);
                            let data = import_data(message, table, file, &o, now);
                            Step::Event("email_rates_manager.import", o, data)
                        } else {
                            let path = self.imports.upload_path();
                            std::fs::write(&path, &file.data).map_err(|e| {
                                AppError::Internal(format!("saving {}: {e}", path.display()))
                            })?;
                            Step::Import(
                                outcome("import_queued", Some(file.file_name.clone()), None),
                                NewImport {
                                    kind: ImportKind::Rates,
                                    rate_tables_id: Some(table.id),
                                    file_name: file.file_name.clone(),
                                    path,
                                    source: "email",
                                },
                            )
                        });
                    }
                }
            }
        }
        Ok(steps)
    }

    async fn commit(
        &self,
        message: &Message,
        source_key: &str,
        steps: Vec<Step>,
        now: Timestamp,
        report: &mut Report,
    ) -> Result<(), AppError> {
        let summary = steps
            .iter()
            .map(|s| match s {
                Step::Event(_, o, _) | Step::Import(o, _) => o.outcome,
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut tx = self.db.begin().await?;
        let recorded = email_messages::record(
            &mut tx,
            &email_messages::HandledMessage {
                source_key,
                message_id: message.message_id.as_deref(),
                sender: &message.sender,
                subject: &message.subject,
                outcome: &summary,
                dt: now,
            },
        )
        .await?;
        if !recorded {
            tx.rollback().await?;
            report.duplicate = true;
            return Ok(());
        }
        let mut queued = false;
        for step in steps {
            match step {
                Step::Event(events_id, outcome, data) => {
                    let key = match outcome.rate_tables_id {
                        Some(id) => format!("rate_tables:{id}"),
                        None => "email_rates_manager".to_string(),
                    };
                    self.pipeline
                        .raise(
                            &mut tx,
                            NewEvent {
                                events_id,
                                object_id: outcome.rate_tables_id,
                                ordering_key: key,
                                data,
                                previous: Map::new(),
                            },
                        )
                        .await?;
                    report.outcomes.push(outcome);
                }
                Step::Import(mut outcome, new) => {
                    let import = self.imports.insert_in(&mut tx, &new).await?;
                    outcome.imports_id = Some(import.id);
                    report.outcomes.push(outcome);
                    queued = true;
                }
            }
        }
        tx.commit().await?;
        self.pipeline.committed();
        if queued {
            self.imports.queued();
        }
        Ok(())
    }
}

/// The `data` of an `email_rates_manager.*` event: what an operator needs to find the
/// message and understand what happened.
fn event_data(
    message: &Message,
    table: Option<&RateTable>,
    outcome: &Outcome,
    now: Timestamp,
) -> Value {
    json!({
        "message_id": message.message_id,
        "sender": message.sender,
        "subject": message.subject,
        "received_at": now,
        "rate_tables_id": table.map(|t| t.id),
        "rate_table": table.map(|t| t.name.clone()),
        "file_name": outcome.file_name,
        "reason": outcome.reason,
    })
}

/// The `data` of `email_rates_manager.import`: the file itself, for the handler's task.
fn import_data(
    message: &Message,
    table: &RateTable,
    file: &RateFile,
    outcome: &Outcome,
    now: Timestamp,
) -> Value {
    let mut data = event_data(message, Some(table), outcome, now);
    data["size"] = json!(file.data.len());
    data["content_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&file.data));
    data["currency"] = json!(table.currency);
    data
}
