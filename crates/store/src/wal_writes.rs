//! A VFS over SQLite's default one that writes each commit's WAL frames in one call.
//!
//! SQLite writes a WAL frame in two `write` calls, its 24-byte header, then the page,
//! and a commit as many frames as it changed pages: under load a group commit wrote
//! about 55 frames, 110 system calls, each with the file system's per-call work (the
//! inode lock, the modification time, a journal handle): about a tenth of the server's
//! CPU. Here the frames of a commit are gathered and written together when its last
//! frame — the commit frame, whose header carries the database size — comes: three
//! calls per commit.
//!
//! Why this is safe:
//! - The commit frame is written at once, after everything gathered before it, in the
//!   calls SQLite makes to write it; their result is the commit's. So when SQLite
//!   publishes a commit to readers every frame of it is in the file, as before, and a
//!   killed process loses nothing that was committed. A write that fails fails the
//!   commit, as it did.
//! - Frames may stay gathered after the call that wrote them only when they are not a
//!   commit's: pages a transaction spilled before its commit. Only the writer's own
//!   connection reads them, through this same file, and every other call on the file
//!   writes what is gathered first. Nor can they outlive the writer's turn: SQLite
//!   publishes commits and gives up the write lock through the database file's
//!   shared-memory calls, which are wrapped too and write the WAL's gathered frames
//!   first. (Without that, frames of a transaction rolled back after spilling stayed
//!   gathered, and were written later over the frames of a commit another connection
//!   had made meanwhile.)
//! - From a commit frame until the commit is published, nothing is gathered: the
//!   padding frames SQLite may write after it when it syncs go to the file at once.
//! - A WAL whose database file is not one of ours gathers nothing.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use rusqlite::ffi;

/// The size of a WAL frame's header.
const FRAME_HEADER: c_int = 24;

/// Gathered bytes beyond which they are written without waiting for the commit frame
/// (a long transaction, an import).
const MAX_GATHERED: usize = 1 << 20;

/// The most the unix VFS writes in one call: it masks the length to 17 bits (its pages
/// are at most 64 KiB), so a longer write is cut, and SQLite reports the disk full.
const MAX_WRITE: usize = 0x1ffff;

const NAME: &CStr = c"billhook-wal-writes";

/// What both wrappers start with: the file SQLite sees, and SQLite's own file (in the
/// same block, just after the wrapper).
#[repr(C)]
struct Head {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
}

/// A WAL file: its database file's wrapper, and the frames gathered for it.
#[repr(C)]
struct WalFile {
    head: Head,
    /// Null when the database file is not one of ours: then nothing is gathered.
    db: *mut DbFile,
    /// Where in the file `gathered` goes.
    offset: i64,
    gathered: Vec<u8>,
    /// A failed write of gathered frames that no call could report (a shared-memory
    /// call): the next call on the file fails with it, so that the transaction those
    /// frames belong to cannot commit without them.
    failed: c_int,
    /// A commit frame was written and its commit is not published yet: what SQLite
    /// writes meanwhile (padding frames, when it syncs) goes straight to the file, so
    /// that a failure fails the commit before it is published.
    committing: bool,
}

/// A main database file: the WAL it has open, if any.
#[repr(C)]
struct DbFile {
    head: Head,
    wal: *mut WalFile,
}

/// The room taken before the real file in the block SQLite allocates, kept 8-aligned.
const ROOM: usize = {
    let (w, d) = (size_of::<WalFile>(), size_of::<DbFile>());
    (if w > d { w } else { d }).next_multiple_of(8)
};

/// Makes this VFS the default, over the default there was; only the first call does
/// anything. Connections opened before keep theirs.
pub(crate) fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which lives as long as
        // the process; the copy made of it is leaked, as SQLite keeps a registered VFS.
        unsafe {
            let real = ffi::sqlite3_vfs_find(ptr::null());
            if real.is_null() {
                tracing::warn!("SQLite has no default VFS: WAL writes stay as they are");
                return;
            }
            REAL_VFS.store(real, Ordering::Release);
            let mut vfs = *real;
            vfs.szOsFile = (*real).szOsFile + ROOM as c_int;
            vfs.zName = NAME.as_ptr();
            vfs.pNext = ptr::null_mut();
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            let rc = ffi::sqlite3_vfs_register(vfs, 1);
            if rc != ffi::SQLITE_OK {
                tracing::warn!(rc, "registering the WAL-writes VFS failed");
            }
        }
    });
}

/// The VFS wrapped; set once, before this VFS is registered.
static REAL_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// # Safety
/// Called by SQLite as a VFS's xOpen: `file` is a block of this VFS's `szOsFile` bytes.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = REAL_VFS.load(Ordering::Acquire);
    let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
    let main_db = flags & ffi::SQLITE_OPEN_MAIN_DB != 0;
    // SAFETY: the real VFS's xOpen with a block at least its szOsFile long; the
    // wrappers are written in the room before it.
    unsafe {
        let real_open = (*real_vfs).xOpen.expect("a VFS opens files");
        if !wal && !main_db {
            return real_open(real_vfs, name, file, flags, out_flags);
        }
        (*file).pMethods = ptr::null();
        let real = file.cast::<u8>().add(ROOM).cast::<ffi::sqlite3_file>();
        (*real).pMethods = ptr::null();
        let rc = real_open(real_vfs, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            if let Some(close) = (*real).pMethods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
            return rc;
        }
        if main_db {
            file.cast::<DbFile>().write(DbFile {
                head: Head {
                    base: ffi::sqlite3_file {
                        pMethods: &DB_METHODS,
                    },
                    real,
                },
                wal: ptr::null_mut(),
            });
            return ffi::SQLITE_OK;
        }
        // SQLite names a WAL by its database's name: that file is ours if its methods
        // are.
        let db = ffi::sqlite3_database_file_object(name);
        let db = if !db.is_null() && ptr::eq((*db).pMethods, &DB_METHODS) {
            db.cast::<DbFile>()
        } else {
            ptr::null_mut()
        };
        let w = file.cast::<WalFile>();
        w.write(WalFile {
            head: Head {
                base: ffi::sqlite3_file {
                    pMethods: &WAL_METHODS,
                },
                real,
            },
            db,
            offset: 0,
            gathered: Vec::new(),
            failed: ffi::SQLITE_OK,
            committing: false,
        });
        if !db.is_null() {
            (*db).wal = w;
        }
        ffi::SQLITE_OK
    }
}

/// # Safety
/// `f` is a WAL file opened by [`open`].
unsafe fn wal<'a>(f: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    // SAFETY: per the contract.
    unsafe { &mut *f.cast::<WalFile>() }
}

/// # Safety
/// `f` is a main database file opened by [`open`].
unsafe fn db<'a>(f: *mut ffi::sqlite3_file) -> &'a mut DbFile {
    // SAFETY: per the contract.
    unsafe { &mut *f.cast::<DbFile>() }
}

/// SQLite's own file under one of ours.
///
/// # Safety
/// `f` is a file of ours, opened by [`open`] as a WAL or a main database file.
unsafe fn real_of(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: both wrappers start with a Head.
    unsafe { (*f.cast::<Head>()).real }
}

/// The real file's methods.
///
/// # Safety
/// `real` is an open file of the real VFS.
unsafe fn methods(real: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: an open file's methods are SQLite's static table.
    unsafe { &*(*real).pMethods }
}

/// Writes what is gathered, if anything.
///
/// # Safety
/// `w.head.real` is open.
unsafe fn flush(w: &mut WalFile) -> c_int {
    if w.gathered.is_empty() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: per the contract.
    let write = unsafe { methods(w.head.real) }.xWrite.expect("files write");
    let mut offset = w.offset;
    let mut rc = ffi::SQLITE_OK;
    for chunk in w.gathered.chunks(MAX_WRITE) {
        // SAFETY: the real xWrite with a live buffer of `chunk.len()` bytes, which fits.
        rc = unsafe {
            write(
                w.head.real,
                chunk.as_ptr().cast(),
                chunk.len() as c_int,
                offset,
            )
        };
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += chunk.len() as i64;
    }
    w.gathered.clear();
    rc
}

/// Before any call on a WAL file: a failure left by a shared-memory call, or the
/// result of writing what is gathered.
///
/// # Safety
/// As [`flush`].
unsafe fn settle(w: &mut WalFile) -> c_int {
    let failed = std::mem::replace(&mut w.failed, ffi::SQLITE_OK);
    if failed != ffi::SQLITE_OK {
        w.gathered.clear();
        return failed;
    }
    // SAFETY: per the contract.
    unsafe { flush(w) }
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes a WAL file of ours and `amount` readable bytes at `buf`.
    let (w, data) = unsafe {
        (
            wal(f),
            std::slice::from_raw_parts(buf.cast::<u8>(), amount.max(0) as usize),
        )
    };
    if w.failed != ffi::SQLITE_OK {
        // SAFETY: as above.
        return unsafe { settle(w) };
    }
    // A frame header's bytes 4..8 are the database's size after a commit, on the
    // commit frame only.
    let commit_header = amount == FRAME_HEADER && data[4..8] != [0; 4];
    w.committing |= commit_header;
    if !w.committing && !w.db.is_null() {
        let follows = !w.gathered.is_empty() && offset == w.offset + w.gathered.len() as i64;
        if follows {
            w.gathered.extend_from_slice(data);
            if w.gathered.len() < MAX_GATHERED {
                return ffi::SQLITE_OK;
            }
            // SAFETY: as above.
            return unsafe { flush(w) };
        }
        if amount == FRAME_HEADER {
            // SAFETY: as above.
            let rc = unsafe { flush(w) };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            w.offset = offset;
            w.gathered.extend_from_slice(data);
            return ffi::SQLITE_OK;
        }
    }
    // SAFETY: as above; then the real xWrite with SQLite's own arguments.
    unsafe {
        let rc = flush(w);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        (methods(w.head.real).xWrite.expect("files write"))(w.head.real, buf, amount, offset)
    }
}

unsafe extern "C" fn wal_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a WAL file of ours once; its wrapper is dropped here and its
    // database file (closed after it) forgets it.
    unsafe {
        let w = wal(f);
        let flushed = settle(w);
        let closed = (methods(w.head.real).xClose.expect("files close"))(w.head.real);
        if !w.db.is_null() {
            (*w.db).wal = ptr::null_mut();
        }
        ptr::drop_in_place(&mut w.gathered);
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// A method of either kind of file: `$before` runs first and may answer instead (with
/// an error), then the real file's method.
macro_rules! forward {
    ($name:ident, $method:ident, $before:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite passes a file of ours and the method's own arguments.
            unsafe {
                let rc = $before(f);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                let real = real_of(f);
                match methods(real).$method {
                    Some(m) => m(real $(, $arg)*),
                    None => ffi::SQLITE_IOERR,
                }
            }
        }
    };
}

/// Before any other call on a WAL: what is gathered is written (see [`settle`]).
///
/// # Safety
/// `f` is a WAL file of ours.
unsafe fn wal_settled(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract.
    unsafe { settle(wal(f)) }
}

/// Before a database file's calls: nothing.
fn as_it_is(_: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_OK
}

/// Before a database file's shared-memory lock, which may end the writer's turn: what
/// its WAL gathered is written (see [`flush_wal_of`]).
///
/// # Safety
/// `f` is a main database file of ours.
unsafe fn wal_written(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract.
    unsafe { flush_wal_of(db(f)) };
    ffi::SQLITE_OK
}

forward!(wal_read, xRead, wal_settled, (buf: *mut c_void, amount: c_int, offset: i64));
forward!(wal_truncate, xTruncate, wal_settled, (size: i64));
forward!(wal_sync, xSync, wal_settled, (flags: c_int));
forward!(wal_file_size, xFileSize, wal_settled, (size: *mut i64));
forward!(wal_lock, xLock, wal_settled, (level: c_int));
forward!(wal_unlock, xUnlock, wal_settled, (level: c_int));
forward!(wal_check_reserved_lock, xCheckReservedLock, wal_settled, (out: *mut c_int));
forward!(wal_file_control, xFileControl, wal_settled, (op: c_int, arg: *mut c_void));
forward!(wal_shm_map, xShmMap, wal_settled, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
forward!(wal_shm_lock, xShmLock, wal_settled, (offset: c_int, n: c_int, flags: c_int));
forward!(wal_shm_unmap, xShmUnmap, wal_settled, (delete: c_int));
forward!(wal_fetch, xFetch, wal_settled, (offset: i64, amount: c_int, out: *mut *mut c_void));
forward!(wal_unfetch, xUnfetch, wal_settled, (offset: i64, page: *mut c_void));

forward!(db_read, xRead, as_it_is, (buf: *mut c_void, amount: c_int, offset: i64));
forward!(db_write, xWrite, as_it_is, (buf: *const c_void, amount: c_int, offset: i64));
forward!(db_truncate, xTruncate, as_it_is, (size: i64));
forward!(db_sync, xSync, as_it_is, (flags: c_int));
forward!(db_file_size, xFileSize, as_it_is, (size: *mut i64));
forward!(db_lock, xLock, as_it_is, (level: c_int));
forward!(db_unlock, xUnlock, as_it_is, (level: c_int));
forward!(db_check_reserved_lock, xCheckReservedLock, as_it_is, (out: *mut c_int));
forward!(db_file_control, xFileControl, as_it_is, (op: c_int, arg: *mut c_void));
forward!(db_shm_map, xShmMap, as_it_is, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
forward!(db_shm_lock, xShmLock, wal_written, (offset: c_int, n: c_int, flags: c_int));
forward!(db_shm_unmap, xShmUnmap, as_it_is, (delete: c_int));
forward!(db_fetch, xFetch, as_it_is, (offset: i64, amount: c_int, out: *mut *mut c_void));
forward!(db_unfetch, xUnfetch, as_it_is, (offset: i64, page: *mut c_void));

/// A method of either kind of file that only asks: forwarded as it is.
macro_rules! ask {
    ($name:ident, $method:ident, $none:expr) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file) -> c_int {
            // SAFETY: SQLite passes a file of ours.
            unsafe {
                let real = real_of(f);
                methods(real).$method.map_or($none, |m| m(real))
            }
        }
    };
}

ask!(sector_size, xSectorSize, 4096);
ask!(device_characteristics, xDeviceCharacteristics, 0);

/// The real file's memory barrier.
///
/// # Safety
/// `f` is a file of ours.
unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: per the contract.
    unsafe {
        let real = real_of(f);
        if let Some(m) = methods(real).xShmBarrier {
            m(real);
        }
    }
}

/// A database file's barrier, before which SQLite never publishes a commit: what its
/// WAL gathered is written first.
unsafe extern "C" fn db_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite passes a database file of ours.
    unsafe {
        wal_written(f);
        shm_barrier(f);
    }
}

/// Writes what the database file's WAL has gathered, before a shared-memory call that
/// may publish a commit or end the writer's turn; a failure is left for the WAL's next
/// call (see [`WalFile::failed`]).
///
/// # Safety
/// `d` is an open database file of ours.
unsafe fn flush_wal_of(d: &mut DbFile) {
    if d.wal.is_null() {
        return;
    }
    // SAFETY: a linked WAL is open (it unlinks itself as it closes).
    let w = unsafe { &mut *d.wal };
    w.committing = false;
    if w.gathered.is_empty() {
        return;
    }
    // SAFETY: as above.
    let rc = unsafe { flush(w) };
    if rc != ffi::SQLITE_OK && w.failed == ffi::SQLITE_OK {
        w.failed = rc;
    }
}

unsafe extern "C" fn db_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a database file of ours once, after its WAL.
    unsafe {
        let d = db(f);
        if !d.wal.is_null() {
            (*d.wal).db = ptr::null_mut();
        }
        (methods(d.head.real).xClose.expect("files close"))(d.head.real)
    }
}

/// Version 3, as the unix VFS's: a method the real file lacks answers SQLITE_IOERR.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(wal_shm_map),
    xShmLock: Some(wal_shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(wal_shm_unmap),
    xFetch: Some(wal_fetch),
    xUnfetch: Some(wal_unfetch),
};

static DB_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(db_close),
    xRead: Some(db_read),
    xWrite: Some(db_write),
    xTruncate: Some(db_truncate),
    xSync: Some(db_sync),
    xFileSize: Some(db_file_size),
    xLock: Some(db_lock),
    xUnlock: Some(db_unlock),
    xCheckReservedLock: Some(db_check_reserved_lock),
    xFileControl: Some(db_file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(db_shm_map),
    xShmLock: Some(db_shm_lock),
    xShmBarrier: Some(db_shm_barrier),
    xShmUnmap: Some(db_shm_unmap),
    xFetch: Some(db_fetch),
    xUnfetch: Some(db_unfetch),
};
