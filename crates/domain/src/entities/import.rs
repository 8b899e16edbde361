use serde::{Deserialize, Serialize};

use crate::{wire_enum, Timestamp};

wire_enum!(
    /// What an import file holds.
    ImportKind { Rates => "rates", Clients => "clients", Dids => "dids" }
);

wire_enum!(
    /// Where an import job is: `queued` → `processing` → `success` | `failed`.
    ImportStatus {
        Queued => "queued",
        Processing => "processing",
        Success => "success",
        Failed => "failed",
    }
);

/// A line of an import file that could not be imported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportError {
    /// 1-based line of the file (the header is line 1); 0 for the file as a whole.
    pub line: u64,
    pub message: String,
}

/// An import job, as the API shows it and `importd.*` events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Import {
    pub id: i64,
    pub kind: ImportKind,
    pub status: ImportStatus,
    pub file_name: String,
    pub rows_total: i64,
    pub rows_imported: i64,
    pub errors: Vec<ImportError>,
    pub rate_tables_id: Option<i64>,
    /// `api` (uploaded), `email` (a deck taken by the email rates manager).
    pub source: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
