//! Every `/api/` route needs `X-Api-Key: KEY` or `Authorization: Bearer KEY`.
//!
//! A tower layer of its own rather than `axum::middleware::from_fn`: that one boxes the
//! route and its future and clones the route's boxed service on every request (four
//! allocations and as many dynamic calls per request, about 1.5 % of the server under
//! load), where a key found in the cache here goes straight to the route.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use billhook_app::{App, AppError};
use futures::future::Either;
use tower_layer::Layer;
use tower_service::Service;

use crate::ApiError;

/// Refuses requests without a valid key with 401 `unauthorized`.
#[derive(Clone)]
pub struct RequireKey(pub App);

impl<S> Layer<S> for RequireKey {
    type Service = KeyChecked<S>;

    fn layer(&self, inner: S) -> KeyChecked<S> {
        KeyChecked {
            inner,
            app: self.0.clone(),
        }
    }
}

/// A route behind [`RequireKey`].
#[derive(Clone)]
pub struct KeyChecked<S> {
    inner: S,
    app: App,
}

type Checking = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for KeyChecked<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Checking>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(key) = key_of(req.headers()) else {
            return Either::Right(Box::pin(async { Ok(unauthorized()) }));
        };
        if self.app.keys.known(key) {
            return Either::Left(self.inner.call(req));
        }
        // Asks the database: the route that was made ready goes with the request.
        let key = key.to_owned();
        let app = self.app.clone();
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Either::Right(Box::pin(async move {
            Ok(match app.keys.verify(&key).await {
                Ok(true) => inner.call(req).await?,
                Ok(false) => unauthorized(),
                Err(e) => ApiError(e).into_response(),
            })
        }))
    }
}

/// The key a request carries, if any.
fn key_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

fn unauthorized() -> Response {
    ApiError(AppError::Unauthorized).into_response()
}
