//! `snodo serve` as a real child process on fixed free ports of 127.0.0.1: started, signalled,
//! killed and restarted by tests, and always killed when the test ends, even by a panic.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use snodo_envelopes::Format;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Answer, Client, TestHub};

/// How long a hub gets to answer `/healthz` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A port of 127.0.0.1 that was free a moment ago: bound to port 0, then released.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True when nothing listens on `port` of 127.0.0.1 (it can be bound now).
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The `snodo` binary under test.
pub fn snodo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_snodo"))
}

/// Sends `signal` (`TERM`, `HUP`, `KILL`…) to process `pid` with the shell's `kill`, which
/// every machine has (procps' may be missing).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {pid}"))
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// Waits up to `timeout` for `child` to exit.
pub async fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One plain-HTTP GET on a fresh connection (no pool to keep the hub's listener busy): the
/// status code, or `None` when nothing answers.
pub async fn plain_get(port: u16, path: &str) -> Option<u16> {
    plain_text(port, path).await.map(|(status, _)| status)
}

/// [`plain_get`], with the body as text.
pub async fn plain_text(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A hub served by a `snodo serve --config FILE` child process.
pub struct HubProcess {
    /// The configuration file the child reads (and reloads on SIGHUP).
    pub config: PathBuf,
    /// The HTTPS port, fixed across restarts.
    pub port: u16,
    /// The plain port of `/healthz`, fixed across restarts.
    pub plain_port: u16,
    /// Where the child's stdout and stderr go, across every run.
    pub log: PathBuf,
    /// How many times a child was started.
    pub starts: usize,
    child: Option<std::process::Child>,
}

impl HubProcess {
    /// Fixes the listeners of `t`'s configuration to free ports; nothing runs yet.
    pub fn new(t: &TestHub) -> HubProcess {
        HubProcess::for_config(&t.config_path, &t.dir.path().join("hub.log"))
    }

    /// Fixes the listeners of the configuration at `config` to free ports; the child logs to
    /// `log`. Nothing runs yet.
    pub fn for_config(config: &Path, log: &Path) -> HubProcess {
        let (port, plain_port) = (free_port(), free_port());
        let text = std::fs::read_to_string(config).unwrap();
        let text = text
            .replace(
                "\nlisten = \"127.0.0.1:0\"",
                &format!("\nlisten = \"127.0.0.1:{port}\""),
            )
            .replace(
                "plain_listen = \"127.0.0.1:0\"",
                &format!("plain_listen = \"127.0.0.1:{plain_port}\""),
            );
        assert!(!text.contains(":0\""), "a listener left on port 0:\n{text}");
        std::fs::write(config, text).unwrap();
        HubProcess {
            config: config.to_owned(),
            port,
            plain_port,
            log: log.to_owned(),
            starts: 0,
            child: None,
        }
    }

    /// The base URL of the HTTPS API.
    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The running child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the hub is not running").id()
    }

    /// Starts the child and waits until `/healthz` answers on the plain listener.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the hub is already running");
        let log = log_file(&self.log);
        let child = snodo()
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.config.parent().unwrap())
            .env("SNODO_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if plain_get(self.plain_port, "/healthz").await == Some(200) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("the hub exited at start ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "/healthz did not answer within {START_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the process dies at once, wherever it is; returns when it is gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the hub is not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `signal` (`TERM`, `HUP`…) to the running child.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits up to `timeout` for the child to exit on its own (after SIGTERM).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the hub is not running");
        match wait_exit(child, timeout).await {
            Some(status) => {
                self.child = None;
                status
            }
            None => panic!(
                "the hub did not exit within {timeout:?}:\n{}",
                self.log_text()
            ),
        }
    }

    /// Everything the child printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` until the log holds `needle` at least `times` times; true if it
    /// does, and the log either way.
    pub async fn wait_log(&self, needle: &str, times: usize, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if text.matches(needle).count() >= times {
                return (true, text);
            }
            if Instant::now() >= deadline {
                return (false, text);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A child process killed when dropped: for children a test runs itself.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    /// The child.
    pub fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a command that ran to its end printed.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `cmd` (its output to files in `dir`), killing it if it runs longer than `timeout`.
pub async fn run_bounded(mut cmd: Command, dir: &Path, timeout: Duration) -> Finished {
    let (out, err) = (dir.join("run.stdout"), dir.join("run.stderr"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(Some(child));
    let status = wait_exit(guard.get(), timeout).await;
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let Some(status) = status else {
        panic!("{cmd:?} still ran after {timeout:?}:\n{stdout}\n{stderr}");
    };
    guard.0 = None;
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Opens (creating) `path` for appending: a log for a child.
pub fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Calls that say when the connection fails instead of panicking, to a hub at any base URL.
impl Client {
    /// Sends `req` with a deadline; a connection that fails (a hub killed, not yet listening,
    /// shutting down) is an `Err`, not a panic.
    pub async fn try_send(&self, req: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        self.try_send_within(req, Duration::from_secs(20)).await
    }

    /// [`Client::try_send`] with its own deadline.
    pub async fn try_send_within(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Answer, reqwest::Error> {
        let resp = req.timeout(timeout).send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.bytes().await?.to_vec();
        Ok(Answer {
            status,
            content_type,
            headers,
            body,
        })
    }

    /// Submits `signed` to the hub at `base` (`https://127.0.0.1:PORT`).
    pub async fn try_submit_at(
        &self,
        base: &str,
        signed: &[u8],
        format: Format,
    ) -> Result<Answer, reqwest::Error> {
        self.try_send(
            self.http
                .post(format!("{base}/v1/envelopes"))
                .header("content-type", format.media_type())
                .body(signed.to_vec()),
        )
        .await
    }

    /// GET `path` of the hub at `base`.
    pub async fn try_get_at(&self, base: &str, path: &str) -> Result<Answer, reqwest::Error> {
        self.try_send(self.http.get(format!("{base}{path}"))).await
    }

    /// POST `body` as JSON to `path` of the hub at `base`.
    pub async fn try_post_json_at(
        &self,
        base: &str,
        path: &str,
        body: &Value,
    ) -> Result<Answer, reqwest::Error> {
        self.try_send(self.http.post(format!("{base}{path}")).json(body))
            .await
    }
}
