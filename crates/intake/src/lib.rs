//! Parsing of what arrives from outside billhook: CSV files (rate decks, client
//! lists, DID lists) and the e-mails carriers send rate decks in.
//!
//! The crate is pure on purpose: it reads from a [`std::io::Read`] or a byte
//! slice and returns typed values or errors, with no files, network, async or
//! database. That keeps the hostile-input surface in one place that can be unit
//! tested and fuzzed on its own (see `fuzz/`), while the application decides
//! where bytes come from and what to do with the rows.
//!
//! - [`CsvRows`] streams any CSV: BOM, separator sniffing, quoting, header
//!   mapping through [`Columns`], and per-row errors with the physical line.
//! - [`rates`] turns a rate deck into [`RateRow`]s; [`rows`] gives generic
//!   [`FieldRow`]s for client and DID lists ([`CLIENT_COLUMNS`], [`DID_COLUMNS`]).
//! - [`parse_message`] reads an RFC 822/MIME message, and [`rate_files`] picks
//!   the CSV files out of its attachments, unpacking ZIP archives.
//!
//! Files are never held whole by the CSV reader: a million-row deck is read one
//! record at a time, so memory stays flat whatever the size.

// Everything here handles untrusted bytes; there is no reason for unsafe code.
#![forbid(unsafe_code)]

mod csv_file;
mod line_endings;
mod mail;
mod rates;
mod rows;
mod zip_files;

pub use csv_file::{Columns, CsvRows, HeaderError, Record, RowError};
pub use mail::{parse_message, Attachment, MailError, Message};
pub use rates::{rates, RateRow, RateRows, RATE_COLUMNS};
pub use rows::{rows, FieldRow, FieldRows, CLIENT_COLUMNS, DID_COLUMNS};
pub use zip_files::{rate_files, FileError, RateFile, MAX_FILE_BYTES};
