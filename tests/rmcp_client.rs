//! rmcp's own client against mcpgate in `Auto` lifecycle mode: it probes `server/discover`,
//! settles on 2026-07-28, and drives multi round-trip requests through its `ClientHandler`
//! (the fleet case is covered by the Python and conformance runs through haproxy).

mod support;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
    ElicitationAction, ProtocolVersion, ReadResourceRequestParams,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RequestContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ErrorData, RoleClient};
use serde_json::json;
use support::Gateway;

/// A client that answers every elicitation with the name Alice.
#[derive(Clone)]
struct Alice;

impl ClientHandler for Alice {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation = Some(Default::default());
        ClientConfig::new(
            capabilities,
            rmcp::model::Implementation::new("rmcp-e2e", "0.0.0"),
        )
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let mut result = ElicitResult::new(ElicitationAction::Accept);
        result.content = Some(json!({"name": "Alice", "color": "blue"}));
        Ok(result)
    }
}

fn text_of(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test]
async fn rmcp_auto_client_settles_on_2026_07_28_and_answers_mrtr() {
    let gw = Gateway::builder().remote().start().await;
    let transport = StreamableHttpClientTransport::from_uri(gw.mcp_url.as_str());
    let lifecycle = ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    };
    let client = Alice
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("the client connects");
    let info = client.peer_info().expect("the server is known");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2026_07_28);

    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"local__echo") && names.contains(&"remote__echo"),
        "{names:?}"
    );
    for upstream in ["local", "remote"] {
        let call = CallToolRequestParams::new(format!("{upstream}__whoami"));
        let who = client.call_tool(call).await.expect("whoami");
        assert_eq!(text_of(&who), upstream);
        let call = CallToolRequestParams::new(format!(
            "{upstream}__test_input_required_result_elicitation"
        ));
        let hello = client
            .call_tool(call)
            .await
            .expect("the MRTR call completes");
        assert_eq!(text_of(&hello), "Hello, Alice!");
    }
    let read = client
        .read_resource(ReadResourceRequestParams::new("test://static-text"))
        .await
        .expect("resources/read");
    assert_eq!(read.contents.len(), 1, "{read:?}");
    assert_eq!(gw.metric("mcpgate_sessions_created_total").await, 0.0);
    client.cancel().await.expect("the client closes");
}
