//! Process-wide SQLite settings, made once before the library is first used (SQLite
//! refuses them afterwards, with `SQLITE_MISUSE`, which is harmless: the defaults stay).
//!
//! - Memory statistics off: with them, every allocation SQLite made took one global
//!   mutex, shared by the writer and every reader thread; nothing of ours reads them.
//! - SQLite allocates through Rust's global allocator (mimalloc in the server) instead
//!   of the C library's malloc: under load SQLite's own allocations (statements, cursors,
//!   the in-memory sub-journal of every group-commit savepoint) took about 5 % of the
//!   server's CPU in glibc's malloc and free.
//! - More lookaside memory per connection (see [`LOOKASIDE_SLOTS`]).
//! - The default VFS writes a commit's WAL frames in one call (see
//!   [`crate::wal_writes`]).

use std::alloc::{alloc, dealloc, realloc, Layout};
use std::ffi::{c_int, c_void};

use rusqlite::ffi;

/// Each connection's lookaside memory, which serves its small allocations without the
/// allocator: SQLite's default, 40 slots of 1,200 bytes, is taken up by the prepared
/// statements the connections keep, and then about 90 allocations per event went to
/// the allocator (4.5 % of the server's instructions under load); 400 slots of 2 KiB
/// (800 KiB per connection) serve nearly all of them.
const LOOKASIDE_SLOT: usize = 2048;
const LOOKASIDE_SLOTS: usize = 400;

/// Makes the settings; only the first call does anything.
pub(crate) fn configure_sqlite() {
    configure_memory();
    crate::wal_writes::register();
}

fn configure_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int. Like every sqlite3_config, it is
        // only valid before sqlite3_initialize and returns SQLITE_MISUSE after.
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
        if rc != ffi::SQLITE_OK {
            tracing::info!(
                rc,
                "SQLite was in use already: its settings stay the defaults"
            );
            return;
        }
        // SAFETY: SQLITE_CONFIG_LOOKASIDE takes two ints, the slot size and count.
        let rc = unsafe {
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_LOOKASIDE,
                LOOKASIDE_SLOT as c_int,
                LOOKASIDE_SLOTS as c_int,
            )
        };
        if rc != ffi::SQLITE_OK {
            tracing::info!(rc, "SQLite keeps its default lookaside memory");
        }
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(lite_malloc),
            xFree: Some(lite_free),
            xRealloc: Some(lite_realloc),
            xSize: Some(lite_size),
            xRoundup: Some(lite_roundup),
            xInit: Some(lite_init),
            xShutdown: Some(lite_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to the methods, which SQLite
        // copies before returning; the functions below keep its contract.
        let rc = unsafe {
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const ffi::sqlite3_mem_methods,
            )
        };
        if rc != ffi::SQLITE_OK {
            tracing::info!(rc, "SQLite keeps the C library's allocator");
        }
    });
}

/// Each block starts with its size (xFree and xSize get only the pointer), in a header
/// that keeps the 8-byte alignment SQLite needs (and asks for no more: a wider
/// alignment sends every block through the allocator's slower aligned path).
const HEADER: usize = 8;

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
}

/// # Safety
/// Called by SQLite only.
unsafe extern "C" fn lite_malloc(n: c_int) -> *mut c_void {
    let Some(layout) = usize::try_from(n).ok().and_then(layout) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout is at least HEADER bytes, never zero-sized.
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the block holds the header, aligned for a usize.
    unsafe {
        base.cast::<usize>().write(layout.size() - HEADER);
        base.add(HEADER).cast()
    }
}

/// # Safety
/// `p` is null or came from [`lite_malloc`] or [`lite_realloc`].
unsafe fn block(p: *mut c_void) -> (*mut u8, Layout) {
    // SAFETY: the caller's contract; the header holds the size the layout was made of.
    unsafe {
        let base = p.cast::<u8>().sub(HEADER);
        let size = base.cast::<usize>().read();
        (
            base,
            Layout::from_size_align_unchecked(size + HEADER, HEADER),
        )
    }
}

unsafe extern "C" fn lite_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: SQLite frees only what its xMalloc or xRealloc returned.
    unsafe {
        let (base, layout) = block(p);
        dealloc(base, layout);
    }
}

/// SQLite calls it with a block it allocated and a size from xRoundup, never zero.
unsafe extern "C" fn lite_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    if p.is_null() {
        // SAFETY: as xMalloc.
        return unsafe { lite_malloc(n) };
    }
    let Some(new) = usize::try_from(n).ok().and_then(layout) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the block is SQLite's from this allocator; the new size is non-zero and
    // valid for the alignment (checked by `layout`). On failure the old block stays.
    unsafe {
        let (base, old) = block(p);
        let moved = realloc(base, old, new.size());
        if moved.is_null() {
            return std::ptr::null_mut();
        }
        moved.cast::<usize>().write(new.size() - HEADER);
        moved.add(HEADER).cast()
    }
}

unsafe extern "C" fn lite_size(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 0;
    }
    // SAFETY: as xFree; the size fitted a c_int when it was allocated.
    unsafe { block(p).1.size() as c_int - HEADER as c_int }
}

unsafe extern "C" fn lite_roundup(n: c_int) -> c_int {
    n.saturating_add(7) & !7
}

unsafe extern "C" fn lite_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn lite_shutdown(_: *mut c_void) {}
