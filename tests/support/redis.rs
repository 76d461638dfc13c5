//! A real `redis-server` for tests: started on a free loopback port in a temp dir, stopped on
//! drop. [`RedisServer::stop`] and [`RedisServer::restart`] simulate outages; with
//! `appendonly` the data survives a restart.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Longest wait for redis-server to answer PING after a start.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A redis-server child process.
pub struct RedisServer {
    pub port: u16,
    appendonly: bool,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without persistence.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(false).await
    }

    /// Starts a server with AOF persistence (`appendfsync always`), so restarts keep data.
    pub async fn start_persistent() -> RedisServer {
        RedisServer::start_with(true).await
    }

    async fn start_with(appendonly: bool) -> RedisServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("cannot create a temp dir for redis");
        let mut server = RedisServer {
            port,
            appendonly,
            dir,
            child: None,
        };
        server.spawn().await;
        server
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain client connection, for inspecting or changing keys behind the gateway's back.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("bad redis url");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("cannot connect to redis-server")
    }

    /// Kills the server (SIGKILL): an outage.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port and directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("cannot create the redis log");
        let appendonly = if self.appendonly { "yes" } else { "no" };
        let child = Command::new(redis_binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", appendonly, "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start redis-server (tests/tools/install.sh installs it)");
        self.child = Some(child);
        self.wait_until_ready().await;
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

fn redis_binary() -> String {
    std::env::var("MCPGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port");
    listener.local_addr().expect("no local address").port()
}
