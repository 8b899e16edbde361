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
//!   publishes a commit to readers (in the WAL index, after these calls return) every
//!   frame of it is in the file, as before, and a killed process loses nothing that was
//!   committed. A write that fails fails the commit, as it did.
//! - Frames gathered and not yet written belong to a transaction still open (pages
//!   spilled before its commit): only the writer's own connection may read them, through
//!   this same file, and every other call on the file writes what is gathered first.
//!   Other connections read only frames of published commits.
//! - Only WAL files are wrapped; the database file and the rest go to SQLite's VFS
//!   untouched.

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

/// A WAL file: SQLite's own file (`real`, in the same block just after this struct)
/// and the frames gathered for it.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Where in the file `gathered` goes.
    offset: i64,
    gathered: Vec<u8>,
}

/// The room taken before the real file in the block SQLite allocates, kept 8-aligned.
const WAL_FILE_ROOM: usize = std::mem::size_of::<WalFile>().next_multiple_of(8);

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
            vfs.szOsFile = (*real).szOsFile + WAL_FILE_ROOM as c_int;
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
    // SAFETY: the real VFS's xOpen with a block at least its szOsFile long.
    unsafe {
        let real_open = (*real_vfs).xOpen.expect("a VFS opens files");
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return real_open(real_vfs, name, file, flags, out_flags);
        }
        (*file).pMethods = ptr::null();
        let real = file
            .cast::<u8>()
            .add(WAL_FILE_ROOM)
            .cast::<ffi::sqlite3_file>();
        (*real).pMethods = ptr::null();
        let rc = real_open(real_vfs, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            if let Some(close) = (*real).pMethods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
            return rc;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            real,
            offset: 0,
            gathered: Vec::new(),
        });
        ffi::SQLITE_OK
    }
}

/// The wrapper and the real file's methods.
///
/// # Safety
/// `f` is a file opened by [`open`] with the WAL flag.
unsafe fn parts<'a>(
    f: *mut ffi::sqlite3_file,
) -> (&'a mut WalFile, &'static ffi::sqlite3_io_methods) {
    // SAFETY: per the contract, `f` is a WalFile, whose real file has these methods.
    unsafe {
        let w = f.cast::<WalFile>();
        let methods = (*(*w).real).pMethods;
        (&mut *w, &*methods)
    }
}

/// Writes what is gathered, if anything.
///
/// # Safety
/// As [`parts`].
unsafe fn flush(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as the caller's.
    let (w, real) = unsafe { parts(f) };
    let write = real.xWrite.expect("files write");
    let mut offset = w.offset;
    let mut rc = ffi::SQLITE_OK;
    for chunk in w.gathered.chunks(MAX_WRITE) {
        // SAFETY: the real xWrite with a live buffer of `chunk.len()` bytes, which fits.
        rc = unsafe { write(w.real, chunk.as_ptr().cast(), chunk.len() as c_int, offset) };
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += chunk.len() as i64;
    }
    w.gathered.clear();
    rc
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes a WAL file of ours and `amount` readable bytes at `buf`.
    let (w, real) = unsafe { parts(f) };
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), amount.max(0) as usize) };
    // A frame header's bytes 4..8 are the database's size after a commit, on the
    // commit frame only.
    let commit_header = amount == FRAME_HEADER && data[4..8] != [0; 4];
    let follows = !w.gathered.is_empty() && offset == w.offset + w.gathered.len() as i64;
    if !commit_header {
        if follows {
            w.gathered.extend_from_slice(data);
            if w.gathered.len() < MAX_GATHERED {
                return ffi::SQLITE_OK;
            }
            // SAFETY: as above.
            return unsafe { flush(f) };
        }
        if amount == FRAME_HEADER {
            // SAFETY: as above.
            let rc = unsafe { flush(f) };
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
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        (real.xWrite.expect("files write"))(w.real, buf, amount, offset)
    }
}

unsafe extern "C" fn close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a WAL file of ours once; its wrapper is dropped here.
    unsafe {
        let flushed = flush(f);
        let (w, real) = parts(f);
        let closed = (real.xClose.expect("files close"))(w.real);
        ptr::drop_in_place(&mut w.gathered);
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Every other method: what is gathered is written first, then the real method runs.
macro_rules! after_flush {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite passes a WAL file of ours and the method's own arguments.
            unsafe {
                let rc = flush(f);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                let (w, real) = parts(f);
                match real.$method {
                    Some(m) => m(w.real $(, $arg)*),
                    None => ffi::SQLITE_IOERR,
                }
            }
        }
    };
}

after_flush!(read, xRead, (buf: *mut c_void, amount: c_int, offset: i64));
after_flush!(truncate, xTruncate, (size: i64));
after_flush!(sync, xSync, (flags: c_int));
after_flush!(file_size, xFileSize, (size: *mut i64));
after_flush!(lock, xLock, (level: c_int));
after_flush!(unlock, xUnlock, (level: c_int));
after_flush!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int));
after_flush!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
after_flush!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
after_flush!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int));
after_flush!(shm_unmap, xShmUnmap, (delete: c_int));
after_flush!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void));
after_flush!(unfetch, xUnfetch, (offset: i64, page: *mut c_void));

unsafe extern "C" fn sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite passes a WAL file of ours.
    unsafe {
        let (w, real) = parts(f);
        real.xSectorSize.map_or(4096, |m| m(w.real))
    }
}

unsafe extern "C" fn device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite passes a WAL file of ours.
    unsafe {
        let (w, real) = parts(f);
        real.xDeviceCharacteristics.map_or(0, |m| m(w.real))
    }
}

unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite passes a WAL file of ours. (SQLite asks the database file, not the
    // WAL, for barriers: nothing is gathered that this must write.)
    unsafe {
        let (w, real) = parts(f);
        if let Some(m) = real.xShmBarrier {
            m(w.real);
        }
    }
}

/// Version 3, as the unix VFS's: a method the real file lacks answers SQLITE_IOERR,
/// which SQLite only asks of a WAL file in ways it does not (shared memory, mapping).
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};
