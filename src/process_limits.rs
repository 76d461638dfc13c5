//! Process resource limits. Every client connection holds a file descriptor, and the usual soft
//! limit on open files (1024) would make a replica unreachable long before
//! `server.max_connections` is reached, so it is raised to the hard limit at start.

/// Descriptors left for everything but client connections: upstream connections and pipes,
/// Redis, the admin listener, log files.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft limit on open file descriptors to the hard limit and logs it; warns when
/// `connections`, the most client connections the listener accepts, would not fit.
pub fn raise_fd_limit(connections: u64) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < connections.saturating_add(RESERVED_DESCRIPTORS) => tracing::warn!(
            limit,
            connections,
            "the open-file limit is below server.max_connections × workers: new connections \
             fail to be accepted before that bound; raise the hard limit or lower the bound"
        ),
        Ok(limit) => tracing::info!(limit, "open-file limit raised to the hard limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}
