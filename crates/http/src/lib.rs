//! The HTTP interface: thin axum routes over the application. Each route parses its
//! input (400 on malformed input), calls one application function and renders the
//! result or the error in the spec's format.

mod auth;
mod error;
mod extract;
pub mod openapi;
mod routes;

use axum::Router;
use billhook_app::App;

pub use error::ApiError;

/// The whole HTTP interface of a running server.
pub fn router(app: App) -> Router {
    routes::router(app)
}
