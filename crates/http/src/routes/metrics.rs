//! `GET /metrics`: Prometheus text.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
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
    let h = m.durations.lock().expect("not poisoned").clone();
    out.push_str("# HELP billhook_call_duration_seconds Duration of handler calls.\n");
    out.push_str("# TYPE billhook_call_duration_seconds histogram\n");
    for (bound, n) in &h.buckets {
        let _ = writeln!(
            out,
            "billhook_call_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "billhook_call_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "billhook_call_duration_seconds_sum {}", h.sum);
    let _ = writeln!(out, "billhook_call_duration_seconds_count {}", h.count);
    if let Ok((pending, oldest)) = app.handlers.backlog().await {
        out.push_str("# HELP billhook_deliveries_pending Deliveries not yet finished.\n");
        out.push_str("# TYPE billhook_deliveries_pending gauge\n");
        let _ = writeln!(out, "billhook_deliveries_pending {pending}");
        let age = oldest.map_or(0.0, |t| {
            (Timestamp::now().micros() - t.micros()).max(0) as f64 / 1e6
        });
        out.push_str("# HELP billhook_oldest_pending_delivery_age_seconds Age of the oldest pending delivery.\n");
        out.push_str("# TYPE billhook_oldest_pending_delivery_age_seconds gauge\n");
        let _ = writeln!(out, "billhook_oldest_pending_delivery_age_seconds {age}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
