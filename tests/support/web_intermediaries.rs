//! Real programs that stand between the gateway and an HTTP upstream: haproxy terminating TLS
//! in front of a fixture ([`TlsFront`]), and tinyproxy as a forward proxy ([`ForwardProxy`]).
//! Both listen on free loopback ports, are killed on drop, and are waited for within bounds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::Fixture;
use super::tls::private_ca_and_server_certificate;

/// Longest wait for a program to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A free loopback port (bound, then released for the program to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits until something accepts connections on `port`.
async fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn(program: &str, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (tests/tools/install.sh installs it): {e}")
        })
}

/// haproxy serving HTTPS on `url`, with a certificate of a private CA (`ca`, a PEM file), and
/// passing every request to a fixture.
pub struct TlsFront {
    /// `https://127.0.0.1:PORT/mcp`.
    pub url: String,
    pub port: u16,
    pub ca: String,
    _haproxy: Child,
}

impl TlsFront {
    pub async fn start(dir: &Path, fixture: &Fixture) -> TlsFront {
        let (ca, cert, key) = private_ca_and_server_certificate(dir);
        let bundle = dir.join("server-bundle.pem");
        let pem = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
        std::fs::write(&bundle, pem).unwrap();
        let port = free_port();
        let config = format!(
            "global\n  maxconn 200\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  \
             timeout server 60s\n\
             frontend tls\n  bind 127.0.0.1:{port} ssl crt {bundle}\n  default_backend fixture\n\
             backend fixture\n  server fixture {fixture}\n",
            bundle = bundle.display(),
            fixture = fixture.address(),
        );
        let config_path = dir.join("haproxy-tls.cfg");
        std::fs::write(&config_path, config).unwrap();
        let haproxy = spawn(
            "haproxy",
            &["-db", "-f", &config_path.display().to_string()],
            &dir.join("haproxy-tls.log"),
        );
        wait_listening(port, "haproxy").await;
        TlsFront {
            url: format!("https://127.0.0.1:{port}/mcp"),
            port,
            ca,
            _haproxy: haproxy,
        }
    }
}

/// tinyproxy on a loopback port, asking for Basic credentials when given some; its log names
/// every request it was asked to forward.
pub struct ForwardProxy {
    port: u16,
    log: PathBuf,
    _tinyproxy: Child,
}

impl ForwardProxy {
    pub async fn start(dir: &Path, credentials: Option<(&str, &str)>) -> ForwardProxy {
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let auth = credentials
            .map(|(user, password)| format!("BasicAuth {user} {password}\n"))
            .unwrap_or_default();
        let config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\n\
             LogLevel Info\nLogFile \"{}\"\n{auth}",
            log.display()
        );
        let config_path = dir.join("tinyproxy.conf");
        std::fs::write(&config_path, config).unwrap();
        let tinyproxy = spawn(
            "tinyproxy",
            &["-d", "-c", &config_path.display().to_string()],
            &dir.join("tinyproxy.out"),
        );
        wait_listening(port, "tinyproxy").await;
        ForwardProxy {
            port,
            log,
            _tinyproxy: tinyproxy,
        }
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT`, or without credentials.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        let userinfo = credentials
            .map(|(user, password)| format!("{user}:{password}@"))
            .unwrap_or_default();
        format!("http://{userinfo}127.0.0.1:{}", self.port)
    }

    /// The request lines of what the proxy was asked to forward, oldest first
    /// (`POST http://HOST:PORT/mcp HTTP/1.1`, `CONNECT HOST:PORT HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.split_once("Request (file descriptor "))
            .filter_map(|(_, rest)| rest.split_once("): "))
            .map(|(_, request)| request.to_owned())
            .collect()
    }
}
