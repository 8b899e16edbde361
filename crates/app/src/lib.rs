//! The application: the action pipeline and the services built on it (billing core,
//! events, API keys) and the scheduler.

pub mod actions;
mod balance;
pub mod email_rates;
mod error;
pub mod handlers;
pub mod imports;
pub mod input;
mod judged;
pub mod keys;
pub mod pipeline;
mod prepared;
pub mod queries;
pub mod rate_tables;
pub mod retention;
pub mod scheduler;
mod turns;

pub use billhook_provisioning::engine::Histogram;
pub use billhook_provisioning::TrustedRoots;
pub use error::AppError;
pub use pipeline::Pipeline;

use billhook_store::Db;

/// Everything a request needs: the database and the pipeline that changes it. One
/// `Arc`, because every request clones it (axum's state).
#[derive(Clone)]
pub struct App(std::sync::Arc<Services>);

impl std::ops::Deref for App {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services of [`App`].
pub struct Services {
    pub db: Db,
    pub pipeline: Pipeline,
    pub keys: keys::KeyRing,
    pub queries: queries::Queries,
    pub handlers: handlers::Handlers,
    pub engine: billhook_provisioning::DeliveryEngine,
    pub imports: imports::Imports,
    pub email_rates: email_rates::EmailRates,
}

impl App {
    /// Builds the application over a migrated database.
    pub fn new(
        db: Db,
        admin_key: Option<String>,
        scripts_dir: std::path::PathBuf,
        handler_roots: billhook_provisioning::TrustedRoots,
        imports: imports::ImportConfig,
    ) -> Result<App, AppError> {
        let caller = billhook_provisioning::Caller::new(scripts_dir, handler_roots);
        let metrics = std::sync::Arc::new(billhook_provisioning::engine::Metrics::default());
        let before = billhook_provisioning::before::BeforeChain::new(db.clone(), caller.clone())
            .with_metrics(metrics.clone());
        let pipeline = Pipeline::new(db.clone(), before.clone());
        let handler_cache = billhook_provisioning::HandlerCache::default();
        let imports = imports::Imports::new(db.clone(), pipeline.clone(), imports)?;
        Ok(App(std::sync::Arc::new(Services {
            email_rates: email_rates::EmailRates::new(
                db.clone(),
                pipeline.clone(),
                imports.clone(),
            ),
            imports,
            engine: billhook_provisioning::DeliveryEngine::new(
                db.clone(),
                caller.clone(),
                pipeline.wake(),
                billhook_provisioning::EngineConfig::default(),
                handler_cache.clone(),
            )
            .with_metrics(metrics),
            handlers: handlers::Handlers::new(
                db.clone(),
                caller,
                before,
                handler_cache,
                pipeline.clone(),
            ),
            pipeline,
            keys: keys::KeyRing::new(db.clone(), admin_key),
            queries: queries::Queries::new(db.clone()),
            db,
        })))
    }
}
