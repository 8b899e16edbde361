//! Raises this process's soft limit of open files, up to its hard limit.
//!
//! Why: every API connection, handler call, script pipe and database file takes a file
//! descriptor, and services often start with a soft limit of 1024 (systemd's default;
//! the hard limit is far higher). At the limit new connections wait unaccepted and
//! handler calls fail to connect: failed attempts, retried later, for a cause that is
//! this server's, not the handler's.
//!
//! Not beyond [`ENOUGH`]: script handlers inherit the limit (restoring it in the child
//! would need a hook between fork and exec, which rules out the faster posix_spawn), and
//! some programs close every descriptor up to it, or use `select()`, which cannot watch
//! more than 1024.

/// The soft limit asked for: more than the calls and connections a server keeps open.
const ENOUGH: libc::rlim_t = 65_536;

/// The soft limit before and after, when it was raised.
pub fn raise() -> std::io::Result<Option<(libc::rlim_t, libc::rlim_t)>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let wanted = ENOUGH.min(limit.rlim_max);
    if limit.rlim_cur >= wanted {
        return Ok(None);
    }
    let was = limit.rlim_cur;
    limit.rlim_cur = wanted;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some((was, wanted)))
}
