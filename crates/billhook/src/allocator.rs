//! The global allocator: mimalloc, asked for a plain block whenever the alignment wanted
//! is one every block has.
//!
//! Why not the `mimalloc` crate's allocator: it asks for every block with
//! `mi_malloc_aligned`, whose fast path serves only blocks of up to 1 KiB found aligned
//! in their page; every larger one (read buffers, JSON texts, SQLite's pages) took its
//! generic path, which over-allocates, aligns by hand and marks the page so that each
//! free of it is slower too. Under load that was about 4 % of the server's
//! instructions, for alignments (1 to 8 bytes) that `mi_malloc` gives anyway.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Every mimalloc block is aligned to at least this: its sizes are whole machine words.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

pub struct Mimalloc;

// SAFETY: every block comes from mimalloc, aligned as its layout asks (plain blocks are
// word-aligned, and only layouts aligned to a word or less get one), and goes back to
// it: `mi_free` and `mi_realloc` take blocks of either kind.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain calls into mimalloc; a null return is reported as failure.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract);
        // the new block keeps the alignment.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}
