//! `billhook serve`: wiring and graceful start/stop.

use std::time::Duration;

use anyhow::Context;
use billhook_app::{retention, scheduler, App};
use tokio::sync::watch;

use crate::config::Config;

/// Runs the server until SIGTERM or SIGINT, then stops taking requests, lets running
/// ones finish and exits.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while starting must stop us gracefully,
    // not by the default action.
    let shutdown = shutdown_signal()?;
    match crate::open_files::raise() {
        Ok(Some((was, now))) => tracing::info!(was, now, "raised the limit of open files"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the limit of open files"),
    }
    let db = crate::open(&config).await?;
    let app = App::new(
        db.clone(),
        config.api_key.clone(),
        config.scripts_dir.clone(),
        crate::handler_roots(&config)?,
        crate::import_config(&config),
    )?;
    if let Some(key) = app.keys.ensure_initial_key().await? {
        println!("generated the admin API key (shown only this once): {key}");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let scheduler = tokio::spawn(scheduler::run(
        app.pipeline.clone(),
        Duration::from_millis(config.scheduler_interval_ms.max(10)),
        stop_rx.clone(),
    ));

    // Off with 0: an operator who keeps every log row prunes nothing.
    let retention = (config.log_retention_secs > 0).then(|| {
        tokio::spawn(retention::run(
            db.clone(),
            Duration::from_secs(config.log_retention_secs),
            stop_rx.clone(),
        ))
    });

    let engine = app
        .engine
        .clone()
        .with_poll(Duration::from_millis(config.delivery_poll_ms.max(10)))
        .with_per_handler(config.handler_concurrency);
    let engine = match config.delivery_max_calls {
        Some(calls) => engine.with_max_calls(calls),
        None => engine,
    };
    let engine = tokio::spawn(engine.run(stop_rx.clone()));
    let imports = tokio::spawn(app.imports.clone().run(stop_rx.clone()));
    let mailboxes = billhook_mailbox::spawn_pollers(
        config.mailboxes.clone(),
        std::sync::Arc::new(crate::email::Ingester(app.email_rates.clone())),
        stop_rx.clone(),
    );

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read the port from this line.
    println!("billhook listening on http://{addr}");
    tracing::info!(%addr, database = %crate::config::redact(&config.database_url), "started");

    axum::serve(listener, billhook_http::router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;

    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    if let Some(retention) = retention {
        let _ = retention.await;
    }
    // In-flight calls finish (bounded by their timeouts) or their leases are released.
    let _ = engine.await;
    let _ = imports.await;
    for m in mailboxes {
        let _ = m.await;
    }
    db.close().await;
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
