//! Which protocol era a request belongs to: the 2026-07-28 wire, where there is no
//! `initialize` and every request names its protocol version, client capabilities and log
//! level in `_meta`, or a legacy session opened with `initialize` (2025-11-25 and older),
//! whose client knows neither `input_required` results nor per-request log levels.

use rmcp::{RoleServer, service::RequestContext};

/// Whether the request speaks 2026-07-28 or later. rmcp reads the version from the request's
/// `_meta`, else from the session's `initialize` (or, on stateless HTTP, the
/// `MCP-Protocol-Version` header): the same test it uses to let an `InputRequiredResult` through.
pub fn is_modern(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|version| !version.has_initialize())
}
