//! `/imports`: multipart uploads streamed to the imports directory, then queued.

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use billhook_app::imports::NewImport;
use billhook_app::queries::List;
use billhook_app::{App, AppError};
use billhook_domain::entities::{Import, ImportKind};
use billhook_domain::FieldErrors;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{query_num, ApiResult, Paging};
use crate::extract::body_error;
use crate::extract::{ApiQuery, Id};
use crate::ApiError;

/// The largest upload: a rate deck of several million rows fits.
const MAX_UPLOAD: usize = 2 * 1024 * 1024 * 1024;

pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/imports",
            post(create)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD))
                .get(list),
        )
        .route("/imports/{id}", get(one))
}

#[derive(Deserialize)]
struct Filter {
    kind: Option<String>,
    status: Option<String>,
    #[serde(default, deserialize_with = "query_num")]
    rate_tables_id: Option<i64>,
    #[serde(flatten)]
    paging: Paging,
}

async fn list(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<List<Import>>> {
    Ok(Json(
        app.imports
            .list(
                f.kind.as_deref(),
                f.status.as_deref(),
                f.rate_tables_id,
                f.paging.page(),
            )
            .await?,
    ))
}

async fn one(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Import>> {
    Ok(Json(app.imports.get(id).await?))
}

/// The form as received; the file is already on disk.
#[derive(Default)]
struct Form {
    kind: Option<String>,
    rate_tables_id: Option<String>,
    file: Option<(String, std::path::PathBuf)>,
}

async fn create(
    State(app): State<App>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!(
            "expected a multipart/form-data body: {}",
            e.body_text()
        ))
    })?;
    let mut form = Form::default();
    let read = read_form(&app, multipart, &mut form).await;
    let queued = match read {
        Ok(()) => new_import(&mut form),
        Err(e) => Err(e),
    };
    let new = match queued {
        Ok(new) => new,
        Err(e) => {
            if let Some((_, path)) = form.file.take() {
                let _ = tokio::fs::remove_file(path).await;
            }
            return Err(e);
        }
    };
    let import = app.imports.enqueue(new).await?;
    let queued = Queued {
        id: import.id,
        status: import.status,
    };
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

/// The answer to an upload: the import queued (`GET /imports/{id}` follows it).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Queued {
    id: i64,
    status: billhook_domain::entities::ImportStatus,
}

/// Reads the fields; the file streams to disk, never whole into memory.
async fn read_form(app: &App, mut multipart: Multipart, form: &mut Form) -> Result<(), ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        let why = format!("malformed multipart body: {}", e.body_text());
        body_error(e.status(), why, MAX_UPLOAD)
    };
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "kind" => form.kind = Some(field.text().await.map_err(bad)?),
            "rate_tables_id" => form.rate_tables_id = Some(field.text().await.map_err(bad)?),
            "file" if form.file.is_none() => {
                let name = field
                    .file_name()
                    .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "upload.csv".to_string());
                let path = app.imports.upload_path();
                form.file = Some((name, path.clone()));
                let mut out = tokio::fs::File::create(&path)
                    .await
                    .map_err(|e| ApiError(AppError::Internal(format!("saving the upload: {e}"))))?;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    out.write_all(&chunk).await.map_err(|e| {
                        ApiError(AppError::Internal(format!("saving the upload: {e}")))
                    })?;
                }
                out.flush()
                    .await
                    .map_err(|e| ApiError(AppError::Internal(format!("saving the upload: {e}"))))?;
            }
            _ => {} // unknown fields are ignored, as browsers send submit buttons
        }
    }
    Ok(())
}

fn new_import(form: &mut Form) -> Result<NewImport, ApiError> {
    let mut errors = FieldErrors::new();
    let kind = match form.kind.as_deref().map(str::trim) {
        None | Some("") => {
            errors.add("kind", "is required");
            None
        }
        Some(k) => {
            let kind = ImportKind::parse(k);
            if kind.is_none() {
                errors.add("kind", ImportKind::expected());
            }
            kind
        }
    };
    let rate_tables_id = match form.rate_tables_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => match t.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                errors.add("rate_tables_id", format!("{t:?} is not an integer"));
                None
            }
        },
    };
    if form.file.is_none() {
        errors.add("file", "is required");
    }
    if !errors.is_empty() {
        return Err(ApiError(AppError::Validation(errors)));
    }
    let (file_name, path) = form.file.take().expect("checked above");
    Ok(NewImport {
        kind: kind.expect("checked above"),
        rate_tables_id,
        file_name,
        path,
        source: "api",
    })
}
