//! `GET /metrics`: Prometheus text.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use billhook_app::handlers::Backlog;
use billhook_app::App;
use billhook_domain::Timestamp;

pub async fn render(State(app): State<App>) -> impl IntoResponse {
    let mut out = String::new();
    let m = &app.engine.metrics;
    out.push_str("# HELP billhook_deliveries_total Delivery attempts by handler and outcome.\n");
    out.push_str("# TYPE billhook_deliveries_total counter\n");
    for ((handler, outcome), n) in m.deliveries.lock().expect("not poisoned").iter() {
        let _ = writeln!(
            out,
            "billhook_deliveries_total{{handlers_id=\"{handler}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let mut durations: Vec<_> = m
        .durations
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|(id, h)| (*id, h.clone()))
        .collect();
    durations.sort_by_key(|(id, _)| *id);
    out.push_str("# HELP billhook_call_duration_seconds Duration of handler calls, by handler.\n");
    out.push_str("# TYPE billhook_call_duration_seconds histogram\n");
    for (id, h) in &durations {
        for (bound, n) in &h.buckets {
            let _ = writeln!(
                out,
                "billhook_call_duration_seconds_bucket{{handlers_id=\"{id}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "billhook_call_duration_seconds_bucket{{handlers_id=\"{id}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "billhook_call_duration_seconds_sum{{handlers_id=\"{id}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "billhook_call_duration_seconds_count{{handlers_id=\"{id}\"}} {}",
            h.count
        );
    }
    if let Ok(backlog) = app.handlers.backlog().await {
        backlog_metrics(&mut out, &backlog);
    }
    let p = billhook_app::retention::pruned_so_far();
    out.push_str("# HELP billhook_log_pruned_rows_total Rows pruned past the logs' retention.\n");
    out.push_str("# TYPE billhook_log_pruned_rows_total counter\n");
    for (kind, n) in [
        ("executions", p.executions),
        ("events", p.events),
        ("deliveries", p.deliveries),
    ] {
        let _ = writeln!(out, "billhook_log_pruned_rows_total{{kind=\"{kind}\"}} {n}");
    }
    out.push_str("# HELP billhook_clock_offset_seconds How far the clock this server's times follow (on PostgreSQL the database's, shared by every server on it) is ahead of this machine's.\n");
    out.push_str("# TYPE billhook_clock_offset_seconds gauge\n");
    let _ = writeln!(
        out,
        "billhook_clock_offset_seconds {}",
        Timestamp::clock_offset_micros() as f64 / 1e6
    );
    if let Some(w) = app.db.writer_stats() {
        writer(&mut out, w.busy, w.commits, w.transactions);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// SQLite's one writer: its busy time per second is how close writes are to queueing
/// for it, the point to move to PostgreSQL.
fn writer(out: &mut String, busy: std::time::Duration, commits: u64, transactions: u64) {
    out.push_str("# HELP billhook_sqlite_writer_busy_seconds_total Time SQLite's one writer connection was in use.\n");
    out.push_str("# TYPE billhook_sqlite_writer_busy_seconds_total counter\n");
    let _ = writeln!(
        out,
        "billhook_sqlite_writer_busy_seconds_total {}",
        busy.as_secs_f64()
    );
    out.push_str("# HELP billhook_sqlite_commits_total Group commits of SQLite's writer.\n");
    out.push_str("# TYPE billhook_sqlite_commits_total counter\n");
    let _ = writeln!(out, "billhook_sqlite_commits_total {commits}");
    out.push_str("# HELP billhook_sqlite_committed_transactions_total Write transactions made durable by those commits.\n");
    out.push_str("# TYPE billhook_sqlite_committed_transactions_total counter\n");
    let _ = writeln!(
        out,
        "billhook_sqlite_committed_transactions_total {transactions}"
    );
}

/// Pending deliveries and the oldest one's age: in all, and by handler (which endpoint
/// is falling behind).
fn backlog_metrics(out: &mut String, backlog: &[Backlog]) {
    let now = Timestamp::now().micros();
    let age =
        |oldest: Option<Timestamp>| oldest.map_or(0.0, |t| (now - t.micros()).max(0) as f64 / 1e6);
    let pending: i64 = backlog.iter().map(|b| b.pending).sum();
    let oldest = backlog.iter().filter_map(|b| b.oldest).min();
    out.push_str("# HELP billhook_deliveries_pending Deliveries not yet finished.\n");
    out.push_str("# TYPE billhook_deliveries_pending gauge\n");
    let _ = writeln!(out, "billhook_deliveries_pending {pending}");
    out.push_str(
        "# HELP billhook_oldest_pending_delivery_age_seconds Age of the oldest pending delivery.\n",
    );
    out.push_str("# TYPE billhook_oldest_pending_delivery_age_seconds gauge\n");
    let _ = writeln!(
        out,
        "billhook_oldest_pending_delivery_age_seconds {}",
        age(oldest)
    );
    let pending: Vec<_> = backlog
        .iter()
        .map(|b| (b.handlers_id, b.pending as f64))
        .collect();
    let ages: Vec<_> = backlog
        .iter()
        .map(|b| (b.handlers_id, age(b.oldest)))
        .collect();
    by_handler(
        out,
        "billhook_handler_deliveries_pending",
        "Deliveries not yet finished, by handler (handlers with some).",
        &pending,
    );
    by_handler(
        out,
        "billhook_handler_oldest_pending_delivery_age_seconds",
        "Age of the oldest pending delivery, by handler.",
        &ages,
    );
}

/// A gauge with a series per handler.
fn by_handler(out: &mut String, name: &str, help: &str, values: &[(i64, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (id, value) in values {
        let _ = writeln!(out, "{name}{{handlers_id=\"{id}\"}} {value}");
    }
}
