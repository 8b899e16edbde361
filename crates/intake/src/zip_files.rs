//! Picking the rate files out of an e-mail: CSV attachments as they are, and
//! the CSV entries of ZIP attachments.
//!
//! A ZIP is the one place where a small input can turn into a huge one, so
//! every entry is read through [`Read::take`] with [`MAX_FILE_BYTES`] (the
//! sizes an archive declares can lie), and the whole archive's output is held
//! to the same budget.
//!
//! Names: a CSV attachment keeps its own name; a ZIP entry is reported as
//! `archive.zip/path/in/archive.csv`, so a user can tell which archive and
//! which entry a row error refers to. Attachments without a name are called
//! `attachment-N.csv` / `attachment-N.zip`, N being the 1-based position among
//! the message's attachments.

use std::io::{Cursor, Read};

use crate::mail::{Attachment, Message};

/// Largest decompressed CSV (and largest total per archive) accepted: far
/// above any real rate deck, far below what would exhaust memory.
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// A CSV file found in a message, ready for [`crate::rates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateFile {
    /// The attachment's name, or `archive.zip/entry.csv` for a ZIP entry.
    pub file_name: String,
    /// The file's bytes.
    pub data: Vec<u8>,
}

/// An attachment that should hold rate files but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file_name}: {reason}")]
pub struct FileError {
    /// The attachment (or `archive.zip/entry.csv`) at fault.
    pub file_name: String,
    /// Human-readable reason.
    pub reason: String,
}

enum Kind {
    Csv,
    Zip,
    Other,
}

/// The CSV files of `message`, in attachment order; `Ok(vec![])` when it has
/// no CSV or ZIP attachment at all.
pub fn rate_files(message: &Message) -> Result<Vec<RateFile>, FileError> {
    let mut files = Vec::new();
    for (index, attachment) in message.attachments.iter().enumerate() {
        match kind(attachment) {
            Kind::Csv => files.push(RateFile {
                file_name: name_or(attachment, index, "csv"),
                data: attachment.data.clone(),
            }),
            Kind::Zip => {
                let archive = name_or(attachment, index, "zip");
                files.extend(unzip_csv(&archive, &attachment.data, MAX_FILE_BYTES)?);
            }
            Kind::Other => {}
        }
    }
    Ok(files)
}

/// By file name first (mail clients often send `application/octet-stream`),
/// then by content type.
fn kind(attachment: &Attachment) -> Kind {
    let name = attachment
        .file_name
        .as_deref()
        .unwrap_or_default()
        .to_lowercase();
    if name.ends_with(".csv") {
        return Kind::Csv;
    }
    if name.ends_with(".zip") {
        return Kind::Zip;
    }
    match attachment.content_type.as_str() {
        "text/csv" | "text/comma-separated-values" | "application/csv" => Kind::Csv,
        "application/zip" | "application/x-zip-compressed" | "application/x-zip" => Kind::Zip,
        _ => Kind::Other,
    }
}

fn name_or(attachment: &Attachment, index: usize, extension: &str) -> String {
    match attachment.file_name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => format!("attachment-{}.{extension}", index + 1),
    }
}

/// The CSV entries of a ZIP archive, at most `limit` bytes each and in all.
fn unzip_csv(archive_name: &str, data: &[u8], limit: u64) -> Result<Vec<RateFile>, FileError> {
    let error = |file_name: &str, reason: String| FileError {
        file_name: file_name.to_owned(),
        reason,
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(data))
        .map_err(|e| error(archive_name, format!("not a readable ZIP archive ({e})")))?;
    let mut files = Vec::new();
    let mut budget = limit;
    for index in 0..archive.len() {
        let (entry_name, encrypted) = {
            let entry = archive
                .by_index_raw(index)
                .map_err(|e| error(archive_name, format!("damaged ZIP archive ({e})")))?;
            if entry.is_dir() {
                continue;
            }
            let name = entry
                .name()
                .map_err(|e| error(archive_name, format!("damaged ZIP archive ({e})")))?
                .into_owned();
            (name, entry.encrypted())
        };
        if !is_csv_entry(&entry_name) {
            continue;
        }
        let file_name = format!("{archive_name}/{entry_name}");
        if encrypted {
            return Err(error(
                &file_name,
                "is encrypted; password-protected ZIP archives are not supported".into(),
            ));
        }
        let entry = archive
            .by_index(index)
            .map_err(|e| error(&file_name, format!("cannot be extracted ({e})")))?;
        let too_big = || {
            error(
                &file_name,
                format!(
                    "decompresses to more than {} (the limit per archive)",
                    human_size(limit)
                ),
            )
        };
        if entry.size() > budget {
            return Err(too_big());
        }
        // The declared size may lie: cap the allocation and the read.
        let capacity = usize::try_from(entry.size().min(16 * 1024 * 1024)).unwrap_or(0);
        let mut bytes = Vec::with_capacity(capacity);
        entry
            .take(budget + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| error(&file_name, format!("cannot be extracted ({e})")))?;
        let size = bytes.len() as u64;
        if size > budget {
            return Err(too_big());
        }
        budget -= size;
        files.push(RateFile {
            file_name,
            data: bytes,
        });
    }
    if files.is_empty() {
        return Err(error(
            archive_name,
            "the ZIP archive contains no CSV file".into(),
        ));
    }
    Ok(files)
}

/// `512 MiB`, or bytes below one MiB.
fn human_size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A `.csv` file that is not macOS metadata (`__MACOSX/`, `._name`).
fn is_csv_entry(name: &str) -> bool {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let in_macosx = name.split(['/', '\\']).any(|dir| dir == "__MACOSX");
    !in_macosx && !base.starts_with("._") && base.to_lowercase().ends_with(".csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates_zip() -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rates.zip")).unwrap()
    }

    #[test]
    fn extraction_is_bounded_per_entry_and_per_archive() {
        let zip = rates_zip();
        // Entries: deck/rates_emea.csv (69 bytes), rates_americas.CSV (27 bytes).
        assert_eq!(unzip_csv("a.zip", &zip, 96).unwrap().len(), 2);
        let e = unzip_csv("a.zip", &zip, 50).unwrap_err();
        assert_eq!(e.file_name, "a.zip/deck/rates_emea.csv");
        assert_eq!(
            e.reason,
            "decompresses to more than 50 bytes (the limit per archive)"
        );
        let e = unzip_csv("a.zip", &zip, 80).unwrap_err();
        assert_eq!(e.file_name, "a.zip/rates_americas.CSV");
        assert_eq!(human_size(MAX_FILE_BYTES), "512 MiB");
    }

    #[test]
    fn csv_entries() {
        assert!(is_csv_entry("rates.csv"));
        assert!(is_csv_entry("deck/2025/Rates.CSV"));
        assert!(!is_csv_entry("__MACOSX/deck/._rates.csv"));
        assert!(!is_csv_entry("deck/._rates.csv"));
        assert!(!is_csv_entry("readme.txt"));
    }
}
