//! A real `redis-server` for tests: started on a free loopback port in a temp dir, stopped on
//! drop. [`RedisServer::stop`] and [`RedisServer::restart`] simulate outages; with
//! `appendonly` the data survives a restart.
//!
//! [`RedisCluster`] is three cluster-enabled masters joined with `redis-cli --cluster create`;
//! [`RedisSentinel`] is a master, a replica and one Sentinel (`redis-server --sentinel`)
//! watching them as `mymaster`.

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
    /// More `redis-server` arguments.
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The HMAC key the test replicas of one fleet share.
const FLEET_HMAC_KEY: &str = "fleet-test-key-0123456789abcdefghijklmnopqrstuvwxyz";

impl RedisServer {
    /// A gateway replica keeping its sessions in this server, whose sessions expire after
    /// `idle_ttl` without a request; every replica built here shares the HMAC key.
    pub fn replica(&self, idle_ttl: &str) -> super::GatewayBuilder {
        super::Gateway::builder()
            .server(&format!("hmac_key = {}", super::toml_str(FLEET_HMAC_KEY)))
            .toml(&format!(
                "[session]\nstore = \"redis\"\nidle_ttl = {}\n[redis]\nurl = {}\ntimeout = \"500ms\"",
                super::toml_str(idle_ttl),
                super::toml_str(&self.url())
            ))
    }

    /// Fills the server with junk, then lowers `maxmemory` below what it uses: with
    /// `noeviction`, it now refuses every write that needs memory, and keeps doing so.
    pub async fn fill_past_maxmemory(&self) {
        let mut client = self.client().await;
        let junk = "x".repeat(16 * 1024);
        for i in 0..128 {
            let _: () = redis::cmd("SET")
                .arg(format!("junk:{i}"))
                .arg(&junk)
                .query_async(&mut client)
                .await
                .expect("SET junk");
        }
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut client)
            .await
            .expect("INFO");
        let used: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory");
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory", &(used - 1024 * 1024).to_string()])
            .query_async(&mut client)
            .await
            .expect("CONFIG SET maxmemory");
        let refused: redis::RedisResult<()> = redis::cmd("SET")
            .arg("one-more")
            .arg("x")
            .query_async(&mut client)
            .await;
        let error = refused.expect_err("Redis accepted a write over maxmemory");
        assert!(error.to_string().contains("OOM"), "{error}");
    }

    /// Starts a server without persistence.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(false).await
    }

    /// Starts a server with AOF persistence (`appendfsync always`), so restarts keep data.
    pub async fn start_persistent() -> RedisServer {
        RedisServer::start_with(true).await
    }

    async fn start_with(appendonly: bool) -> RedisServer {
        RedisServer::start_args(appendonly, &[]).await
    }

    /// Starts a server with more arguments.
    pub async fn start_args(appendonly: bool, args: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("cannot create a temp dir for redis");
        let mut server = RedisServer {
            port,
            appendonly,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
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
            .args(&self.args)
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

/// Longest wait for a cluster to form or a Sentinel to see its master.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis Cluster of three masters (no replicas) on loopback.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
            // A dead node's slots fail, the others keep serving.
            "--cluster-require-full-coverage",
            "no",
        ];
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // The bus port defaults to the node's port + 10,000, which nothing reserved: a
            // client's ephemeral port could hold it (and it failed a run so), or it could
            // pass 65,535.
            let bus_port = free_port().to_string();
            let args = [&args[..], &["--cluster-port", &bus_port]].concat();
            nodes.push(RedisServer::start_args(false, &args).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let create = Command::new(redis_cli_binary())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(SETUP_TIMEOUT, create)
            .await
            .expect("redis-cli --cluster create timed out")
            .expect("cannot run redis-cli (it comes with redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok().await;
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// How many keys each node holds.
    pub async fn key_counts(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            let mut conn = node.client().await;
            counts.push(
                redis::cmd("DBSIZE")
                    .query_async(&mut conn)
                    .await
                    .expect("DBSIZE"),
            );
        }
        counts
    }

    async fn wait_until_ok(&self) {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        for node in &self.nodes {
            loop {
                let mut conn = node.client().await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ok:\n{info}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The master name every [`RedisSentinel`] monitors.
pub const MASTER_NAME: &str = "mymaster";

/// A master, its replica and one Sentinel (quorum 1) watching them as [`MASTER_NAME`].
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel_port: u16,
    dir: tempfile::TempDir,
    sentinel: Option<Child>,
}

impl RedisSentinel {
    pub async fn start() -> RedisSentinel {
        let master = RedisServer::start().await;
        let replica = RedisServer::start_args(
            false,
            &["--replicaof", "127.0.0.1", &master.port.to_string()],
        )
        .await;
        let dir = tempfile::tempdir().expect("cannot create a temp dir for the sentinel");
        let sentinel_port = free_port();
        let config = format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 10000\n",
            dir.path().display(),
            master.port
        );
        let config_path = dir.path().join("sentinel.conf");
        std::fs::write(&config_path, config).expect("cannot write sentinel.conf");
        let log = std::fs::File::create(dir.path().join("sentinel.log")).expect("sentinel log");
        let child = Command::new(redis_binary())
            .arg(&config_path)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start redis-server --sentinel");
        let sentinel = RedisSentinel {
            master,
            replica,
            sentinel_port,
            dir,
            sentinel: Some(child),
        };
        sentinel.wait_until_watching().await;
        sentinel
    }

    /// `redis://127.0.0.1:PORT` of the Sentinel.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }

    async fn sentinel_client(&self) -> Option<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.sentinel_url())
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()
    }

    /// The master's port according to the Sentinel.
    pub async fn master_port(&self) -> Option<u16> {
        let mut conn = self.sentinel_client().await?;
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .ok()?;
        address.map(|(_, port)| port)
    }

    /// Waits until the Sentinel reports the master and knows its replica.
    async fn wait_until_watching(&self) {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            if self.master_port().await == Some(self.master.port) && self.knows_replica().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel did not see its master and replica:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn knows_replica(&self) -> bool {
        let Some(mut conn) = self.sentinel_client().await else {
            return false;
        };
        let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        replicas.iter().any(|r| {
            r.get("port").map(String::as_str) == Some(&self.replica.port.to_string())
                && r.get("flags").map(String::as_str) == Some("slave")
                && r.get("master-link-status").map(String::as_str) == Some("ok")
        })
    }

    /// `SENTINEL FAILOVER` after the replica has caught up; returns once the Sentinel reports
    /// the replica as master.
    pub async fn failover(&self) {
        let mut master = self.master.client().await;
        let _: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(2000)
            .query_async(&mut master)
            .await
            .expect("WAIT");
        let mut conn = self.sentinel_client().await.expect("sentinel connection");
        let _: () = redis::cmd("SENTINEL")
            .arg("failover")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .expect("SENTINEL FAILOVER");
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while self.master_port().await != Some(self.replica.port) {
            assert!(
                Instant::now() < deadline,
                "the failover did not happen:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(child) = &mut self.sentinel {
            let _ = child.start_kill();
        }
    }
}

fn redis_cli_binary() -> String {
    std::env::var("MCPGATE_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

/// Starts a read of `key` on `log` (waiting up to `wait`) in the background, timing it.
pub fn spawn_read(
    log: &std::sync::Arc<mcpgate::events::RedisEventLog>,
    key: &mcpgate::events::StreamKey,
    wait: Duration,
    after: u64,
) -> tokio::task::JoinHandle<(
    Result<mcpgate::events::Batch, mcpgate::events::EventLogError>,
    Duration,
)> {
    use mcpgate::events::EventLog;
    let (log, key) = (log.clone(), key.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let result = log.read(&key, after, wait).await;
        (result, started.elapsed())
    })
}
