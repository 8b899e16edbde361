//! A SQLite connection with its prepared statements, found by a number given to each SQL
//! text once (see `sql::LiteSql`) instead of by the text.
//!
//! Why not rusqlite's `prepare_cached`: for every statement run it hashed the whole SQL
//! text twice (to take the statement out of its cache and to put it back), allocated
//! the key again and moved the entry in its LRU list: about 5 % of the SQLite writer's
//! time under load, for statements that never change. Here a statement is looked up by
//! two integers, bound, stepped and reset through SQLite's C API directly.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr};
use std::ptr::NonNull;

use rusqlite::ffi;
use rusqlite::types::Value;

use crate::sql::Arg;
use crate::StoreError;

/// Statements kept per connection; past this, all are finalized and prepared again as
/// they come (only a flood of distinct texts gets there: a list's filters, a batch's size).
const KEPT: usize = 512;

/// A pooled SQLite connection and its prepared statements.
pub(crate) struct Lite {
    // Declared first: dropped, so finalized, before the connection closes (rusqlite's
    // close fails on a connection with statements left).
    statements: Statements,
    conn: rusqlite::Connection,
}

impl Drop for Lite {
    /// Finalizes the statements first, whatever the fields' order: a connection closed
    /// with statements left is leaked, not closed. (A `Drop` also forbids moving the
    /// connection out on its own.)
    fn drop(&mut self) {
        self.statements.0.clear();
    }
}

/// Prepared statements by (text number, statement within the text).
struct Statements(HashMap<(u32, u32), Prepared, foldhash::fast::RandomState>);

/// A prepared statement, finalized when dropped.
struct Prepared(NonNull<ffi::sqlite3_stmt>);

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: the statement came from sqlite3_prepare_v3 and is finalized once, here;
        // its connection is still open (see `Lite`'s field order).
        unsafe { ffi::sqlite3_finalize(self.0.as_ptr()) };
    }
}

// SAFETY: a statement is used only through its `Lite`, with its connection, which moves
// between threads as a whole and is never used by two at once (SQLite's multi-thread
// mode, rusqlite's default, allows exactly that).
unsafe impl Send for Statements {}

impl Lite {
    pub(crate) fn new(conn: rusqlite::Connection) -> Lite {
        Lite {
            statements: Statements(HashMap::default()),
            conn,
        }
    }

    /// Runs `sql` (one statement) with `args`, kept under `key` (a text's number and the
    /// statement's place in it; none: prepared for this run only), giving each result
    /// row to `row` until it answers false; returns the connection's count of changes.
    pub(crate) fn run(
        &mut self,
        key: Option<(u32, u32)>,
        sql: &str,
        args: &[Arg],
        mut row: impl FnMut(&Step<'_>) -> Result<bool, StoreError>,
    ) -> Result<u64, StoreError> {
        let db = self.db();
        // A text that is not kept is prepared for this run only, finalized when `once`
        // drops, after the run.
        let mut once = None;
        let stmt = match key {
            Some(key) => {
                if !self.statements.0.contains_key(&key) && self.statements.0.len() >= KEPT {
                    self.statements.0.clear();
                }
                match self.statements.0.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.get().0,
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(prepare(db, sql)?).0,
                }
            }
            None => once.insert(prepare(db, sql)?).0,
        };
        Running { db, stmt }.go(args, &mut row)
    }

    /// The connection itself.
    pub(crate) fn conn(&mut self) -> &mut rusqlite::Connection {
        &mut self.conn
    }

    fn db(&self) -> *mut ffi::sqlite3 {
        // SAFETY: the handle of an open connection, used only while it is.
        unsafe { self.conn.handle() }
    }
}

fn prepare(db: *mut ffi::sqlite3, sql: &str) -> Result<Prepared, StoreError> {
    let len = c_int::try_from(sql.len())
        .map_err(|_| StoreError::Corrupt("a SQL text over 2 GiB".into()))?;
    let mut stmt = std::ptr::null_mut();
    // SAFETY: `sql` is valid for `len` bytes (no NUL needed with an explicit length);
    // `stmt` receives the statement or stays null.
    let rc = unsafe {
        ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr().cast::<c_char>(),
            len,
            ffi::SQLITE_PREPARE_PERSISTENT,
            &mut stmt,
            std::ptr::null_mut(),
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(error(db, rc));
    }
    NonNull::new(stmt)
        .map(Prepared)
        .ok_or_else(|| StoreError::Corrupt(format!("no statement in {sql:?}")))
}

/// The connection's last error as rusqlite reports it (so that callers classify it as
/// before: a constraint, a busy database).
fn error(db: *mut ffi::sqlite3, rc: c_int) -> StoreError {
    // SAFETY: an open connection; the message is copied before any other call.
    let (code, message) = unsafe {
        let message = ffi::sqlite3_errmsg(db);
        let message =
            (!message.is_null()).then(|| CStr::from_ptr(message).to_string_lossy().into_owned());
        (ffi::sqlite3_extended_errcode(db), message)
    };
    let code = if code & 0xff == rc & 0xff { code } else { rc };
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        ffi::Error::new(code),
        message,
    ))
}

/// A statement being run: reset, its bindings cleared, whatever happens.
struct Running {
    db: *mut ffi::sqlite3,
    stmt: NonNull<ffi::sqlite3_stmt>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: a live statement of this connection. Its text arguments were bound
        // without a copy (SQLITE_STATIC): clearing them here, before `go`'s caller's
        // arguments can go, is what makes that sound.
        unsafe {
            ffi::sqlite3_reset(self.stmt.as_ptr());
            ffi::sqlite3_clear_bindings(self.stmt.as_ptr());
        }
    }
}

impl Running {
    fn go(
        self,
        args: &[Arg],
        row: &mut impl FnMut(&Step<'_>) -> Result<bool, StoreError>,
    ) -> Result<u64, StoreError> {
        let stmt = self.stmt.as_ptr();
        // SAFETY: `stmt` is live; parameter indexes are within its count; text pointers
        // stay valid until `self` drops (see `Drop for Running`).
        unsafe {
            let count = usize::try_from(ffi::sqlite3_bind_parameter_count(stmt)).unwrap_or(0);
            // Parameters beyond the arguments stay unbound: NULL, as sqlx treats them.
            for (i, arg) in args.iter().take(count).enumerate() {
                let i = (i + 1) as c_int;
                let rc = match arg {
                    Arg::Null(_) => ffi::sqlite3_bind_null(stmt, i),
                    Arg::Int(v) => ffi::sqlite3_bind_int64(stmt, i, *v),
                    Arg::Real(v) => ffi::sqlite3_bind_double(stmt, i, *v),
                    Arg::Text(v) => ffi::sqlite3_bind_text64(
                        stmt,
                        i,
                        // An empty String's pointer dangles: a real one, as rusqlite does.
                        if v.is_empty() {
                            c"".as_ptr()
                        } else {
                            v.as_ptr().cast::<c_char>()
                        },
                        v.len() as u64,
                        ffi::SQLITE_STATIC(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                };
                if rc != ffi::SQLITE_OK {
                    return Err(error(self.db, rc));
                }
            }
            let mut wanted = true;
            loop {
                match ffi::sqlite3_step(stmt) {
                    ffi::SQLITE_ROW => {
                        // Rows past those wanted are stepped through: an UPDATE …
                        // RETURNING must finish its work.
                        if wanted {
                            wanted = row(&Step {
                                stmt: self.stmt,
                                _running: &self,
                            })?;
                        }
                    }
                    ffi::SQLITE_DONE => break,
                    rc => return Err(error(self.db, rc)),
                }
            }
            Ok(ffi::sqlite3_changes64(self.db) as u64)
        }
    }
}

/// The current row of a statement being run.
pub(crate) struct Step<'a> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    _running: &'a Running,
}

impl Step<'_> {
    pub(crate) fn column_count(&self) -> usize {
        // SAFETY: a live statement.
        usize::try_from(unsafe { ffi::sqlite3_column_count(self.stmt.as_ptr()) }).unwrap_or(0)
    }

    pub(crate) fn column_name(&self, i: usize) -> String {
        // SAFETY: a live statement and a column within its count; the name is copied.
        unsafe {
            let name = ffi::sqlite3_column_name(self.stmt.as_ptr(), i as c_int);
            if name.is_null() {
                return String::new();
            }
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }

    /// Column `i` of the row.
    pub(crate) fn value(&self, i: usize) -> Result<Value, StoreError> {
        let stmt = self.stmt.as_ptr();
        let i = i as c_int;
        // SAFETY: a live statement on a row, a column within its count; text and blob
        // pointers are read for their byte count right away, before any other call on
        // the statement.
        unsafe {
            Ok(match ffi::sqlite3_column_type(stmt, i) {
                ffi::SQLITE_NULL => Value::Null,
                ffi::SQLITE_INTEGER => Value::Integer(ffi::sqlite3_column_int64(stmt, i)),
                ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_column_double(stmt, i)),
                ffi::SQLITE_TEXT => {
                    let p = ffi::sqlite3_column_text(stmt, i);
                    let n = usize::try_from(ffi::sqlite3_column_bytes(stmt, i)).unwrap_or(0);
                    let bytes = if p.is_null() {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(p, n)
                    };
                    Value::Text(String::from_utf8(bytes.to_vec()).map_err(|e| {
                        StoreError::Corrupt(format!("column {i} is not UTF-8: {e}"))
                    })?)
                }
                _ => {
                    let p = ffi::sqlite3_column_blob(stmt, i).cast::<u8>();
                    let n = usize::try_from(ffi::sqlite3_column_bytes(stmt, i)).unwrap_or(0);
                    let bytes = if p.is_null() {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(p, n)
                    };
                    Value::Blob(bytes.to_vec())
                }
            })
        }
    }
}
