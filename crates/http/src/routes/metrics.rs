//! `GET /metrics`: Prometheus text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use billhook_app::handlers::Backlog;
use billhook_app::App;
use billhook_app::Histogram;
use billhook_domain::catalogue::Stage;
use billhook_domain::Timestamp;

pub async fn render(State(app): State<App>) -> impl IntoResponse {
    let mut out = String::new();
    let m = &app.engine.metrics;
    // Every handler not archived has its series from the start, at 0 before its first
    // call (and after a restart, which starts the counts again): a series that appears
    // only with the first call hides that first increase from `rate()` and `increase()`.
    let live = app.handlers.live().await.unwrap_or_default();
    let seeded =
        |counts: &HashMap<(i64, &'static str), u64>, stage: Stage, labels: [&'static str; 3]| {
            let mut all: BTreeMap<(i64, &'static str), u64> =
                counts.iter().map(|(k, n)| (*k, *n)).collect();
            for (id, _) in live.iter().filter(|(_, s)| *s == stage) {
                for label in labels {
                    all.entry((*id, label)).or_default();
                }
            }
            all
        };
    let deliveries = seeded(
        &m.deliveries.lock().expect("not poisoned"),
        Stage::After,
        ["success", "retry", "failed"],
    );
    head(
        &mut out,
        "billhook_deliveries_total",
        "counter",
        "Delivery attempts by handler and outcome.",
    );
    for ((handler, outcome), n) in deliveries {
        let _ = writeln!(
            out,
            "billhook_deliveries_total{{handlers_id=\"{handler}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let before_calls = seeded(
        &m.before_calls.lock().expect("not poisoned"),
        Stage::Before,
        ["allow", "forbid", "failure"],
    );
    head(
        &mut out,
        "billhook_before_calls_total",
        "counter",
        "Before-stage calls by handler and verdict (allow, forbid, failure).",
    );
    for ((handler, verdict), n) in before_calls {
        let _ = writeln!(
            out,
            "billhook_before_calls_total{{handlers_id=\"{handler}\",verdict=\"{verdict}\"}} {n}"
        );
    }
    let mut by_handler = m.durations.lock().expect("not poisoned").clone();
    for (id, _) in &live {
        by_handler.entry(*id).or_insert_with(Histogram::empty);
    }
    durations(&mut out, &by_handler);
    if let Ok(backlog) = app.handlers.backlog().await {
        backlog_metrics(&mut out, &backlog);
    }
    let p = billhook_app::retention::pruned_so_far();
    head(
        &mut out,
        "billhook_log_pruned_rows_total",
        "counter",
        "Rows pruned past the logs' retention.",
    );
    for (kind, n) in [
        ("executions", p.executions),
        ("events", p.events),
        ("deliveries", p.deliveries),
    ] {
        let _ = writeln!(out, "billhook_log_pruned_rows_total{{kind=\"{kind}\"}} {n}");
    }
    single(
        &mut out,
        "billhook_clock_offset_seconds",
        "gauge",
        "How far the clock this server's times follow (on PostgreSQL the database's, shared by every server on it) is ahead of this machine's.",
        Timestamp::clock_offset_micros() as f64 / 1e6,
    );
    if let Some(w) = app.db.writer_stats() {
        writer(&mut out, w.busy, w.commits, w.transactions);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// A metric's HELP and TYPE lines.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric of one sample without labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Call durations: a histogram per handler, in the order of their ids.
fn durations(out: &mut String, by_handler: &HashMap<i64, Histogram>) {
    const NAME: &str = "billhook_call_duration_seconds";
    let mut ids: Vec<i64> = by_handler.keys().copied().collect();
    ids.sort_unstable();
    head(
        out,
        NAME,
        "histogram",
        "Duration of handler calls, by handler.",
    );
    for (id, h) in ids.iter().map(|id| (id, &by_handler[id])) {
        for (bound, n) in &h.buckets {
            let _ = writeln!(
                out,
                "{NAME}_bucket{{handlers_id=\"{id}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "{NAME}_bucket{{handlers_id=\"{id}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{NAME}_sum{{handlers_id=\"{id}\"}} {}", h.sum);
        let _ = writeln!(out, "{NAME}_count{{handlers_id=\"{id}\"}} {}", h.count);
    }
}

/// SQLite's one writer: its busy time per second is how close writes are to queueing
/// for it, the point to move to PostgreSQL.
fn writer(out: &mut String, busy: std::time::Duration, commits: u64, transactions: u64) {
    single(
        out,
        "billhook_sqlite_writer_busy_seconds_total",
        "counter",
        "Time SQLite's one writer connection was in use.",
        busy.as_secs_f64(),
    );
    single(
        out,
        "billhook_sqlite_commits_total",
        "counter",
        "Group commits of SQLite's writer.",
        commits,
    );
    single(
        out,
        "billhook_sqlite_committed_transactions_total",
        "counter",
        "Write transactions made durable by those commits.",
        transactions,
    );
}

/// Pending deliveries and the oldest one's age: in all, and by handler (which endpoint
/// is falling behind).
fn backlog_metrics(out: &mut String, backlog: &[Backlog]) {
    let now = Timestamp::now().micros();
    let age =
        |oldest: Option<Timestamp>| oldest.map_or(0.0, |t| (now - t.micros()).max(0) as f64 / 1e6);
    single(
        out,
        "billhook_deliveries_pending",
        "gauge",
        "Deliveries not yet finished.",
        backlog.iter().map(|b| b.pending).sum::<i64>(),
    );
    single(
        out,
        "billhook_oldest_pending_delivery_age_seconds",
        "gauge",
        "Age of the oldest pending delivery.",
        age(backlog.iter().filter_map(|b| b.oldest).min()),
    );
    let mut by_handler = |name: &str, help: &str, value: &dyn Fn(&Backlog) -> f64| {
        head(out, name, "gauge", help);
        for b in backlog {
            let _ = writeln!(
                out,
                "{name}{{handlers_id=\"{}\"}} {}",
                b.handlers_id,
                value(b)
            );
        }
    };
    by_handler(
        "billhook_handler_deliveries_pending",
        "Deliveries not yet finished, by after handler (0 for one with none).",
        &|b| b.pending as f64,
    );
    by_handler(
        "billhook_handler_oldest_pending_delivery_age_seconds",
        "Age of the oldest pending delivery, by after handler (0 for one with none).",
        &|b| age(b.oldest),
    );
}
