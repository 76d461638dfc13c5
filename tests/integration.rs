//! The integration tests, one binary: each module below tests one concern against real
//! processes (the gateway, the fixture, redis-server) over loopback HTTP, sharing the harness
//! in `support` (and `fuzz`, the request generator of `fuzz_requests`). One binary rather than
//! one per file, so that the suite links once, not 27 times: a CI run's linker died of SIGBUS
//! (the sign of a full disk) while linking the 27, each holding the whole gateway.
//! Run one module with `cargo nextest run <module>::`.

mod fuzz;
mod support;

mod auth;
mod bad_input;
mod bench_cli;
mod client_capabilities;
mod failure_semantics;
mod fleet;
mod fuzz_requests;
mod hostile_clients;
mod http_status;
mod isolated_stdio;
mod legacy_bridge;
mod limits;
mod live_reload;
mod modern_era;
mod redis_events;
mod redis_modes;
mod redis_store;
mod request_costs;
mod rmcp_client;
mod session_binding;
mod session_lifecycle;
mod session_surface;
mod sse_transport;
mod sse_upstream;
mod standalone_streams;
mod tasks;
mod team_policy;
mod under_attack;
mod upstream_hardening;
mod upstream_resilience;
mod upstream_transport;
