//! Generic rows for the lists whose types live in the application (clients,
//! DIDs): this crate only checks the header and hands over raw text, so the
//! application validates the values with the same rules as its API.

use std::io::Read;

use crate::csv_file::{Columns, CsvRows, HeaderError, RowError};

/// Client lists: the simple scalar fields of `Client::WRITABLE` (tags stay one
/// raw string; splitting them on `|` or `;` is the application's business).
pub const CLIENT_COLUMNS: Columns<'static> = Columns {
    required: &["name"],
    optional: &["status", "currency", "credit", "email", "tags"],
    aliases: &[],
};

/// DID lists: the simple scalar fields of `Did::WRITABLE`. A DID's status is
/// changed through its actions, not written, so it is not a column; hold
/// fields only make sense with a hold action and are left out too.
pub const DID_COLUMNS: Columns<'static> = Columns {
    required: &["number"],
    optional: &["clients_id", "accounts_id"],
    aliases: &[("did", "number"), ("phone_number", "number")],
};

/// One record as `(column, value)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRow {
    /// 1-based physical line where the record starts.
    pub line: u64,
    /// Canonical column name and trimmed value, in header order; empty values
    /// are left out so "absent" and "empty" mean the same.
    pub fields: Vec<(String, String)>,
}

impl FieldRow {
    /// The value of `column`, if present and not empty.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, value)| value.as_str())
    }
}

/// Iterator over generic rows; see [`rows`].
#[derive(Debug)]
pub struct FieldRows<R: Read> {
    rows: CsvRows<R>,
}

/// Reads any CSV whose header fits `columns`, one [`FieldRow`] or
/// [`RowError`] per non-blank record.
pub fn rows<R: Read>(reader: R, columns: &Columns<'_>) -> Result<FieldRows<R>, HeaderError> {
    Ok(FieldRows {
        rows: CsvRows::new(reader, columns)?,
    })
}

impl<R: Read> Iterator for FieldRows<R> {
    type Item = Result<FieldRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.rows.next()? {
            Ok(record) => record,
            Err(e) => return Some(Err(e)),
        };
        let fields = self
            .rows
            .columns()
            .iter()
            .zip(record.values)
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (name.clone(), value))
            .collect();
        Some(Ok(FieldRow {
            line: record.line,
            fields,
        }))
    }
}
