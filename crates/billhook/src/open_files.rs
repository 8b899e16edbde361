//! Raises this process's soft limit of open files to its hard limit.
//!
//! Why: every API connection, handler call, script pipe and database file takes a file
//! descriptor, and services often start with a soft limit of 1024 (systemd's default;
//! the hard limit is far higher). At the limit new connections wait unaccepted and
//! handler calls fail to connect: failed attempts, retried later, for a cause that is
//! this server's, not the handler's. Go's runtime raises the limit the same way.

/// The soft limit before and after, when it was raised.
pub fn raise_to_hard_limit() -> std::io::Result<Option<(libc::rlim_t, libc::rlim_t)>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(None);
    }
    let was = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some((was, limit.rlim_cur)))
}
