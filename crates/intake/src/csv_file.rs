//! Streaming CSV reading with the tolerance real-world exports need.
//!
//! Files come from spreadsheets and carrier portals: some start with a UTF-8 BOM
//! (Excel), some use `;` because the locale's decimal mark is `,`, some use TAB
//! or `|`. Rather than asking the user, the separator is sniffed from the header
//! line, which is the one line whose content we know something about.
//!
//! Only the first line is looked at before parsing starts; after that the `csv`
//! crate reads record by record through a buffer, so the file size does not
//! matter. Problems with a single record become a [`RowError`] carrying the
//! physical line where the record starts, so a user can find it in an editor;
//! problems with the header stop everything with a [`HeaderError`], because no
//! row could be understood without it.

use std::fmt;
use std::io::{self, Chain, Cursor, Read};

use serde::Serialize;

use crate::line_endings::LfLines;

/// Separators we sniff for, in order of preference when they tie.
const SEPARATORS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// How much of the file is read to find the header line. A header longer than
/// this is not a header of any file we accept.
const HEADER_PEEK_BYTES: usize = 64 * 1024;

/// The columns a caller accepts, by their canonical (normalised) names.
///
/// Header names are normalised before matching: trimmed, lowercased, spaces
/// turned into `_`. So `Dial Code` matches an alias `dial_code`.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// Columns that must be present in the header.
    pub required: &'a [&'a str],
    /// Columns that may be present.
    pub optional: &'a [&'a str],
    /// `(alias, canonical)` pairs: a header `alias` is read as `canonical`.
    pub aliases: &'a [(&'a str, &'a str)],
}

impl<'a> Columns<'a> {
    /// Maps a normalised header name to its canonical column, if accepted.
    fn canonical(&self, name: &str) -> Option<&'a str> {
        self.all().find(|c| *c == name).or_else(|| {
            self.aliases
                .iter()
                .find(|(alias, _)| *alias == name)
                .map(|(_, canonical)| *canonical)
        })
    }

    fn all(&self) -> impl Iterator<Item = &'a str> {
        self.required.iter().chain(self.optional).copied()
    }

    /// "prefix, rate, effective_from (also: code → prefix, ...)" for messages.
    fn accepted(&self) -> String {
        let mut text = self.all().collect::<Vec<_>>().join(", ");
        if !self.aliases.is_empty() {
            let aliases: Vec<String> = self
                .aliases
                .iter()
                .map(|(alias, canonical)| format!("{alias} for {canonical}"))
                .collect();
            text.push_str(&format!(" (also {})", aliases.join(", ")));
        }
        text
    }
}

/// Why a file cannot be read at all: its header (or lack of one) is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct HeaderError {
    /// Human-readable reason, naming the offending column where there is one.
    pub message: String,
}

impl HeaderError {
    fn new(message: impl Into<String>) -> HeaderError {
        HeaderError {
            message: message.into(),
        }
    }
}

/// Why one record of a file was refused; the others are still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RowError {
    /// 1-based physical line where the record starts (the header is line 1).
    pub line: u64,
    /// Human-readable reason, starting with the field name where there is one,
    /// e.g. `rate: "0,0068" is not a decimal number`.
    pub message: String,
}

/// One data record: trimmed values aligned with [`CsvRows::columns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based physical line where the record starts.
    pub line: u64,
    /// Trimmed values, one per column, in header order.
    pub values: Vec<String>,
}

/// The reader the `csv` crate sees: the bytes already peeked, then the rest.
type Source<R> = Chain<Cursor<Vec<u8>>, LfLines<R>>;

/// A streaming CSV reader yielding [`Record`]s after a validated header.
pub struct CsvRows<R: Read> {
    reader: csv::Reader<Source<R>>,
    columns: Vec<String>,
    record: csv::ByteRecord,
    done: bool,
}

impl<R: Read> fmt::Debug for CsvRows<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvRows")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl<R: Read> CsvRows<R> {
    /// Reads the header and checks it against `columns`.
    ///
    /// Fails on an empty file, a file that is not text, or a header with an
    /// unknown, duplicate or missing required column.
    pub fn new(reader: R, columns: &Columns<'_>) -> Result<CsvRows<R>, HeaderError> {
        let mut reader = LfLines::new(reader);
        let mut head = peek_first_line(&mut reader)
            .map_err(|e| HeaderError::new(format!("the file could not be read: {e}")))?;
        if head.starts_with(b"\xEF\xBB\xBF") {
            head.drain(..3);
        }
        if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
            // Excel's "Unicode text" export.
            return Err(HeaderError::new(
                "the file is UTF-16 text; save it as UTF-8 CSV",
            ));
        }
        if head.contains(&0) {
            return Err(HeaderError::new(
                "the file is not text (a CSV file is expected)",
            ));
        }
        let separator = sniff_separator(&head);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(separator)
            .has_headers(false)
            // Field counts are checked here, to report them as row errors.
            .flexible(true)
            .from_reader(Cursor::new(head).chain(reader));

        let mut header = csv::ByteRecord::new();
        let found = loop {
            match reader.read_byte_record(&mut header) {
                Ok(false) => break false,
                Ok(true) if is_blank(&header) => continue,
                Ok(true) => break true,
                Err(e) => return Err(HeaderError::new(format!("the file could not be read: {e}"))),
            }
        };
        if !found {
            return Err(HeaderError::new("the file is empty"));
        }
        let names = header_names(&header, columns)?;
        Ok(CsvRows {
            reader,
            columns: names,
            record: csv::ByteRecord::new(),
            done: false,
        })
    }

    /// Canonical column names, in header order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Position of a canonical column in the header, if present.
    pub fn index_of(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }
}

impl<R: Read> Iterator for CsvRows<R> {
    type Item = Result<Record, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) if is_blank(&self.record) => continue,
                Ok(true) => return Some(self.convert()),
                Err(e) => {
                    // After an I/O error the position of the reader is unknown;
                    // stop rather than risk reporting garbage forever.
                    self.done = true;
                    let line = self.reader.position().line();
                    return Some(Err(RowError {
                        line,
                        message: format!("the file could not be read: {e}"),
                    }));
                }
            }
        }
    }
}

impl<R: Read> CsvRows<R> {
    fn convert(&self) -> Result<Record, RowError> {
        // See line_endings.rs: every record ends with `\n`, so it starts this
        // many lines before where the reader now is.
        let inner_newlines = self
            .record
            .iter()
            .map(|field| field.iter().filter(|&&b| b == b'\n').count() as u64)
            .sum::<u64>();
        let line = self
            .reader
            .position()
            .line()
            .saturating_sub(1 + inner_newlines)
            .max(1);
        if self.record.len() != self.columns.len() {
            return Err(RowError {
                line,
                message: format!(
                    "has {} fields, the header has {}",
                    self.record.len(),
                    self.columns.len()
                ),
            });
        }
        let mut values = Vec::with_capacity(self.record.len());
        for (index, raw) in self.record.iter().enumerate() {
            let text = std::str::from_utf8(raw).map_err(|_| RowError {
                line,
                message: format!(
                    "{}: is not valid UTF-8 text (save the file as UTF-8)",
                    self.columns[index]
                ),
            })?;
            values.push(text.trim().to_owned());
        }
        Ok(Record { line, values })
    }
}

/// Reads from `reader` until the end of the first non-blank line, the peek
/// limit or the end of the input, and returns the bytes read.
///
/// Done by hand rather than with `BufReader::fill_buf` because one `read` may
/// return only part of a line; the bytes are handed back to the CSV parser
/// afterwards, so nothing is lost and nothing else is read ahead.
fn peek_first_line<R: Read>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(8 * 1024);
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let body = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head);
        let has_line = body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .is_some_and(|start| body[start..].contains(&b'\n'));
        if has_line || head.len() >= HEADER_PEEK_BYTES {
            return Ok(head);
        }
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(head);
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

/// Picks the separator that splits the first non-blank line into the most
/// fields, counting only separators outside double quotes; `,` when none does.
fn sniff_separator(head: &[u8]) -> u8 {
    let line = head
        .split(|&b| b == b'\n')
        .find(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .unwrap_or(&[]);
    let count = |separator: u8| {
        let mut quoted = false;
        line.iter()
            .filter(|&&b| {
                if b == b'"' {
                    quoted = !quoted;
                }
                !quoted && b == separator
            })
            .count()
    };
    let mut best = (b',', 0);
    for separator in SEPARATORS {
        let n = count(separator);
        if n > best.1 {
            best = (separator, n);
        }
    }
    best.0
}

/// A record whose fields are all empty or whitespace: a blank line, or the
/// `;;;;` rows spreadsheets leave below the data.
fn is_blank(record: &csv::ByteRecord) -> bool {
    record
        .iter()
        .all(|field| field.iter().all(u8::is_ascii_whitespace))
}

/// `Dial Code ` → `dial_code`.
fn normalise(name: &str) -> String {
    name.trim().to_lowercase().replace(' ', "_")
}

/// Maps each header field to its canonical column, refusing unknown,
/// duplicate and missing required columns.
fn header_names(
    header: &csv::ByteRecord,
    columns: &Columns<'_>,
) -> Result<Vec<String>, HeaderError> {
    let mut names = Vec::with_capacity(header.len());
    for (index, raw) in header.iter().enumerate() {
        let text = std::str::from_utf8(raw)
            .map_err(|_| HeaderError::new("the file is not UTF-8 text (save it as UTF-8 CSV)"))?;
        let name = normalise(text);
        if name.is_empty() {
            return Err(HeaderError::new(format!(
                "column {} has no name; accepted columns: {}",
                index + 1,
                columns.accepted()
            )));
        }
        let Some(canonical) = columns.canonical(&name) else {
            return Err(HeaderError::new(format!(
                "unknown column {name:?}; accepted columns: {}",
                columns.accepted()
            )));
        };
        if names.iter().any(|n| n == canonical) {
            let how = if canonical == name {
                String::new()
            } else {
                format!(" (as {name:?})")
            };
            return Err(HeaderError::new(format!(
                "column {canonical:?} appears twice{how}; accepted columns: {}",
                columns.accepted()
            )));
        }
        names.push(canonical.to_owned());
    }
    if let Some(missing) = columns
        .required
        .iter()
        .find(|required| !names.iter().any(|n| n == *required))
    {
        return Err(HeaderError::new(format!(
            "missing required column {missing:?}; accepted columns: {}",
            columns.accepted()
        )));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: Columns<'static> = Columns {
        required: &["a"],
        optional: &["b"],
        aliases: &[("alpha", "a")],
    };

    fn read(text: &[u8]) -> Result<Vec<Result<Record, RowError>>, HeaderError> {
        Ok(CsvRows::new(text, &COLUMNS)?.collect())
    }

    #[test]
    fn sniffs_the_separator_from_the_header() {
        assert_eq!(sniff_separator(b"a;b;c\n1,5;2,5;3"), b';');
        assert_eq!(sniff_separator(b"a\tb\n"), b'\t');
        assert_eq!(sniff_separator(b"a|b\n"), b'|');
        assert_eq!(sniff_separator(b"a,b\n"), b',');
        assert_eq!(sniff_separator(b"a\n"), b',');
        // A quoted separator does not count.
        assert_eq!(sniff_separator(b"\"x;y;z\",b\n"), b',');
        assert_eq!(sniff_separator(b"\n\n a;b\n"), b';');
    }

    #[test]
    fn header_is_normalised_and_aliased() {
        let rows = CsvRows::new(&b" Alpha ,B\n1,2\n"[..], &COLUMNS).unwrap();
        assert_eq!(rows.columns(), ["a", "b"]);
    }

    #[test]
    fn header_errors_name_the_column() {
        let e = read(b"a,c\n").unwrap_err();
        assert!(e.message.contains("unknown column \"c\""), "{e}");
        assert!(e.message.contains("accepted columns: a, b"), "{e}");
        let e = read(b"a,alpha\n").unwrap_err();
        assert!(e.message.contains("\"a\" appears twice"), "{e}");
        let e = read(b"b\n").unwrap_err();
        assert!(e.message.contains("missing required column \"a\""), "{e}");
        let e = read(b"").unwrap_err();
        assert_eq!(e.message, "the file is empty");
        let e = read(b"\n \n").unwrap_err();
        assert_eq!(e.message, "the file is empty");
        let e = read(b"\xFF\xFEa\x00,\x00b\x00").unwrap_err();
        assert!(e.message.contains("UTF-16"), "{e}");
        let e = read(b"PK\x03\x04\x00\x00").unwrap_err();
        assert!(e.message.contains("not text"), "{e}");
    }

    #[test]
    fn lines_are_physical_whatever_the_endings() {
        for input in [
            &b"a,b\n\n\n1,2\n\"x\ny\",3\n\n4,5"[..],
            b"a,b\r\n\r\n\r\n1,2\r\n\"x\r\ny\",3\r\n\r\n4,5\r\n",
            b"a,b\r\r\r1,2\r\"x\ry\",3\r\r4,5",
        ] {
            let lines: Vec<u64> = read(input)
                .unwrap()
                .into_iter()
                .map(|r| r.unwrap().line)
                .collect();
            assert_eq!(lines, [4, 5, 8], "{:?}", String::from_utf8_lossy(input));
        }
        let errors: Vec<u64> = read(b"a,b\r\n\r\n1\r\n \r\n1,2,3")
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap_err().line)
            .collect();
        assert_eq!(errors, [3, 5]);
    }

    #[test]
    fn reads_one_byte_at_a_time() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let rows = CsvRows::new(Trickle(b"\xEF\xBB\xBFa;b\n1;2\n"), &COLUMNS).unwrap();
        assert_eq!(rows.columns(), ["a", "b"]);
        let records: Vec<_> = rows.map(Result::unwrap).collect();
        assert_eq!(
            records,
            [Record {
                line: 2,
                values: vec!["1".into(), "2".into()]
            }]
        );
    }
}
