//! The JSON-RPC bodies a worker sends, serialized once per worker: every request of a
//! connection carries the same id (the connection's number), since requests on one connection
//! go one after another, and ids differ between connections that may share a session.

use bytes::Bytes;
use serde_json::{Value, json};

/// A request of the method mix: its method and params.
pub struct Call {
    method: &'static str,
    params: Value,
}

impl Call {
    pub fn tool(name: &str, arguments: &Value) -> Call {
        Call {
            method: "tools/call",
            params: json!({"name": name, "arguments": arguments}),
        }
    }

    pub fn list_tools() -> Call {
        Call {
            method: "tools/list",
            params: json!({}),
        }
    }

    pub fn read_resource(uri: &str) -> Call {
        Call {
            method: "resources/read",
            params: json!({"uri": uri}),
        }
    }
}

/// Everything a run sends, before the ids are filled in.
pub struct Messages {
    initialize: Value,
    calls: Vec<Call>,
}

impl Messages {
    pub fn new(protocol_version: &str, calls: Vec<Call>) -> Messages {
        let initialize = json!({
            "protocolVersion": protocol_version,
            "capabilities": {},
            "clientInfo": {"name": "mcpgate-bench", "version": env!("CARGO_PKG_VERSION")},
        });
        Messages { initialize, calls }
    }

    /// The bodies of the connection numbered `id`.
    pub fn bodies(&self, id: usize) -> Bodies {
        let request = |method: &str, params: &Value| {
            let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            Bytes::from(message.to_string())
        };
        Bodies {
            initialize: request("initialize", &self.initialize),
            initialized: Bytes::from_static(
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            ),
            mix: self
                .calls
                .iter()
                .map(|call| request(call.method, &call.params))
                .collect(),
            next: 0,
        }
    }
}

/// One connection's bodies; [`Bodies::next_call`] walks the method mix round robin.
pub struct Bodies {
    pub initialize: Bytes,
    pub initialized: Bytes,
    mix: Vec<Bytes>,
    next: usize,
}

impl Bodies {
    pub fn next_call(&mut self) -> Bytes {
        let body = self.mix[self.next % self.mix.len()].clone();
        self.next = self.next.wrapping_add(1);
        body
    }
}
