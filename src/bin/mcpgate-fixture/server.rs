//! The fixture's `ServerHandler`: per-session state and the mapping of MCP
//! methods onto the tool, resource, prompt, logging and subscription modules.
//!
//! rmcp 3.11 deprecates logging and `resources/subscribe` (SEP-2577, protocol
//! 2026-07-28); the fixture implements them because 2025-11-25 is under test.
#![allow(deprecated)]

use std::sync::Arc;

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, CompleteRequestParams,
        CompleteResult, GetPromptRequestParams, GetPromptResponse, GetTaskParams, GetTaskResult,
        Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
        ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
        ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams,
        SubscriptionFilter, Tool, UnsubscribeRequestParams, UpdateTaskParams,
    },
    service::{RequestContext, SubscriptionContext},
};

use crate::{
    input_required,
    logging::LogLevel,
    prompts,
    reconnect::ReconnectingSessions,
    resources,
    subscriptions::{self, Changes},
    tasks, tools,
};

/// One MCP session's handler. HTTP mode builds a fresh one per session.
#[derive(Clone)]
pub struct Fixture {
    /// Reported as `serverInfo.name` and by the `whoami` tool.
    pub name: Arc<str>,
    /// Minimum level of `notifications/message` this session wants.
    pub log_level: LogLevel,
    /// URIs this session subscribed to with `resources/subscribe`.
    pub subscriptions: resources::Subscriptions,
    /// Present in HTTP mode: lets `test_reconnection` close its SSE stream.
    pub streams: Option<Arc<ReconnectingSessions>>,
    /// List changes, shared by every handler of the process (`subscriptions/listen`).
    pub changes: Changes,
    /// Serving on stdin/stdout: the hostile tools write their huge lines there themselves.
    pub over_stdio: bool,
}

impl Fixture {
    /// Creates a handler; `streams` is `None` on transports without SSE.
    pub fn new(
        name: impl Into<Arc<str>>,
        streams: Option<Arc<ReconnectingSessions>>,
        changes: Changes,
    ) -> Self {
        Self {
            name: name.into(),
            log_level: LogLevel::default(),
            subscriptions: resources::Subscriptions::default(),
            streams,
            changes,
            over_stdio: false,
        }
    }
}

/// Capabilities advertised at `initialize` and `server/discover`.
fn capabilities() -> ServerCapabilities {
    ServerCapabilities::builder()
        .enable_logging()
        .enable_completions()
        .enable_prompts()
        .enable_prompts_list_changed()
        .enable_resources()
        .enable_resources_subscribe()
        .enable_tools()
        .enable_tool_list_changed()
        .enable_tasks()
        .build()
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(capabilities())
            .with_server_info(Implementation::new(
                self.name.as_ref(),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(format!(
                "Test fixture for mcpgate, instance {}; tools named test_* follow the MCP conformance suite.",
                self.name
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools::catalog()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::catalog().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if input_required::is_tool(&request.name) {
            return input_required::call_tool(request, &context).await;
        }
        if tasks::is_tool(&request.name) {
            return tasks::call_tool(request, &context).await;
        }
        tools::call(self, request, context).await.map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(resources::catalog()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        resources::read(&request.uri).map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions.subscribe(request.uri, context.peer)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(subscriptions::accepted_filter(requested))
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), McpError> {
        subscriptions::listen(&self.changes, subscription).await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions.unsubscribe(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(prompts::catalog()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if request.name == input_required::PROMPT {
            return input_required::get_prompt(request, &context).await;
        }
        prompts::get(&request.name, request.arguments.unwrap_or_default()).map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        prompts::complete(&request)
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        tasks::get(&request.task_id)
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tasks::update(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tasks::cancel(&request.task_id)
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.log_level.set(request.level);
        Ok(())
    }
}
