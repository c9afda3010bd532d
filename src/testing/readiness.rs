//! One start attempt of a [`LocalServer`]: launching `postgres` and waiting until it answers,
//! telling a lost port race from a real failure by the server log.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use super::error::{io_error, ClusterError};
use super::server::LocalServer;
use super::{lock, DEFAULT_DATABASE};

/// How often readiness is polled while a server starts.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a server may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of the server log an error message quotes.
const LOG_TAIL_LINES: usize = 30;

/// What happened to one start attempt.
pub(super) enum StartFailure {
    /// The port was taken by someone else: try another.
    PortTaken,
    Fatal(ClusterError),
}

impl LocalServer {
    /// Starts `postgres` on `self.port` and waits until it accepts a connection.
    pub(super) async fn launch_and_wait(&self) -> Result<(), StartFailure> {
        let log_start = fs::metadata(self.log_file()).map(|m| m.len()).unwrap_or(0);
        let child = self
            .server_command()
            .map_err(StartFailure::Fatal)?
            .spawn()
            .map_err(|e| {
                StartFailure::Fatal(io_error(format!(
                    "start {}",
                    self.binaries.postgres().display()
                ))(e))
            })?;
        *lock(&self.child) = Some(child);

        let result = self.wait_until_ready(log_start).await;
        if result.is_err() {
            self.kill_now();
        }
        result
    }

    async fn wait_until_ready(&self, log_start: u64) -> Result<(), StartFailure> {
        let started = Instant::now();
        let expected_data_dir = self.data_dir().to_string_lossy().into_owned();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.classify_exit(status, log_start));
            }
            if let Some(data_dir) = self.probe_data_directory().await {
                // A server answering with another data directory owns the port: ours lost.
                return if data_dir == expected_data_dir {
                    Ok(())
                } else {
                    Err(StartFailure::PortTaken)
                };
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(StartFailure::Fatal(ClusterError::StartTimeout {
                    waited: started.elapsed(),
                    log_tail: log_tail(&self.log_file()),
                }));
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// Tells a lost port race (retry elsewhere) from a real failure, by the log lines the
    /// server wrote since `log_start`.
    fn classify_exit(&self, status: ExitStatus, log_start: u64) -> StartFailure {
        let this_attempt = log_since(&self.log_file(), log_start);
        if this_attempt.contains("could not bind")
            || this_attempt.contains("Address already in use")
        {
            return StartFailure::PortTaken;
        }
        StartFailure::Fatal(ClusterError::ServerExited {
            status,
            log_tail: log_tail(&self.log_file()),
        })
    }

    /// Connects once and asks for the server's data directory; `None` if not reachable yet.
    async fn probe_data_directory(&self) -> Option<String> {
        let mut config = self.config(DEFAULT_DATABASE);
        config.connect_timeout(Duration::from_secs(1));
        let attempt = async {
            let (client, connection) = config.connect(NoTls).await.ok()?;
            let connection = tokio::spawn(connection);
            let row = client.query_one("SHOW data_directory", &[]).await.ok();
            drop(client);
            let _ = connection.await;
            row.map(|row| row.get::<_, String>(0))
        };
        tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = lock(&self.child);
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status),
            _ => None,
        }
    }
}

fn log_tail(log_file: &Path) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let Ok(mut file) = File::open(log_file) else {
        return format!("(no log at {})", log_file.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn log_since(log_file: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(log_file) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}
