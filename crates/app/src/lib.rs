//! The application: the action pipeline and the services built on it (billing core,
//! events, API keys) and the scheduler.

pub mod actions;
mod balance;
mod error;
pub mod handlers;
pub mod input;
pub mod keys;
pub mod pipeline;
pub mod queries;
pub mod scheduler;
mod turns;

pub use error::AppError;
pub use pipeline::Pipeline;

use billhook_store::Db;

/// Everything a request needs: the database and the pipeline that changes it.
#[derive(Clone)]
pub struct App {
    pub db: Db,
    pub pipeline: Pipeline,
    pub keys: keys::KeyRing,
    pub queries: queries::Queries,
    pub handlers: handlers::Handlers,
    pub engine: billhook_provisioning::DeliveryEngine,
}

impl App {
    /// Builds the application over a migrated database.
    pub fn new(db: Db, admin_key: Option<String>, scripts_dir: std::path::PathBuf) -> App {
        let caller = billhook_provisioning::Caller::new(scripts_dir);
        let before = billhook_provisioning::before::BeforeChain::new(db.clone(), caller.clone());
        let pipeline = Pipeline::new(db.clone(), before.clone());
        let handler_cache = billhook_provisioning::HandlerCache::default();
        App {
            engine: billhook_provisioning::DeliveryEngine::new(
                db.clone(),
                caller.clone(),
                pipeline.wake(),
                billhook_provisioning::EngineConfig::default(),
                handler_cache.clone(),
            ),
            handlers: handlers::Handlers::new(db.clone(), caller, before, handler_cache),
            pipeline,
            keys: keys::KeyRing::new(db.clone(), admin_key),
            queries: queries::Queries::new(db.clone()),
            db,
        }
    }
}
