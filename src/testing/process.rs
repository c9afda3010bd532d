//! [`ServerProcess`]: one helper server (PgBouncer, Redis) in its own temporary directory,
//! started as an unprivileged user when this process is root, on a loopback port, and
//! cleaned up on drop or, if never dropped, once this process has ended.

use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::{io_error, ClusterError};
use super::user::RunAs;
use super::{lock, unique_suffix};

/// How long a helper server may take to accept its first TCP connection.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many bytes of the log an error message quotes.
const LOG_TAIL_BYTES: u64 = 4000;

/// A helper server process and its directory.
#[derive(Debug)]
pub(super) struct ServerProcess {
    name: &'static str,
    pub(super) root: PathBuf,
    pub(super) run_as: Option<RunAs>,
    pub(super) port: u16,
    child: Mutex<Option<Child>>,
    reaper: Option<Child>,
}

impl ServerProcess {
    /// Makes the directory (owned by the unprivileged user when root) and picks a port.
    pub(super) fn prepare(name: &'static str) -> Result<ServerProcess, ClusterError> {
        let run_as = RunAs::for_current_process()?;
        let root = std::env::temp_dir().join(format!("poolguard-{name}-{}", unique_suffix()));
        fs::create_dir_all(&root).map_err(io_error(format!("create {}", root.display())))?;
        if let Some(run_as) = run_as {
            run_as.chown(&root)?;
        }
        let port = free_loopback_port()?;
        let reaper = spawn_reaper(&root);
        Ok(ServerProcess {
            name,
            root,
            run_as,
            port,
            child: Mutex::new(None),
            reaper,
        })
    }

    /// The file the server's standard output and error go to.
    pub(super) fn log_file(&self) -> PathBuf {
        self.root.join(format!("{}.log", self.name))
    }

    /// Writes `contents` to `file` in the directory, readable by the server's user.
    pub(super) fn write_file(&self, file: &str, contents: &str) -> Result<PathBuf, ClusterError> {
        let path = self.root.join(file);
        fs::write(&path, contents).map_err(io_error(format!("write {}", path.display())))?;
        if let Some(run_as) = self.run_as {
            run_as.chown(&path)?;
        }
        Ok(path)
    }

    /// Starts `command` (as the unprivileged user when root) and waits until the port
    /// accepts a TCP connection.
    pub(super) async fn launch(&self, mut command: Command) -> Result<(), ClusterError> {
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(io_error(format!("open {}", self.log_file().display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_error("duplicate the log handle"))?;
        command
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(run_as) = self.run_as {
            run_as.apply(&mut command);
        }
        let child = command
            .spawn()
            .map_err(io_error(format!("start {}", self.name)))?;
        let _ = fs::write(self.root.join("pid"), child.id().to_string());
        *lock(&self.child) = Some(child);
        let started = Instant::now();
        loop {
            let alive = || {
                lock(&self.child)
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            };
            // A listener on the port while our child is still alive is ours (another
            // process holding the port would make the child exit).
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() && alive() {
                return Ok(());
            }
            if let Some(status) = lock(&self.child).as_mut().and_then(|c| c.try_wait().ok()?) {
                return Err(ClusterError::ServerExited {
                    status,
                    log_tail: self.log_tail(),
                });
            }
            if started.elapsed() > READY_TIMEOUT {
                self.kill();
                return Err(ClusterError::StartTimeout {
                    waited: READY_TIMEOUT,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (SIGKILL) and reaps it; does nothing when it is not running.
    pub(super) fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.root.join("pid"));
    }

    /// The last part of the log.
    pub(super) fn log_tail(&self) -> String {
        let Ok(mut file) = fs::File::open(self.log_file()) else {
            return String::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut text = String::new();
        use std::io::Seek;
        let _ = file.seek(io::SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let _ = file.read_to_string(&mut text);
        text
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A small `sh` process in its own process group that waits for its stdin pipe to close
/// (the kernel closes it when this process ends), then kills the server named by the pid
/// file and removes the directory. Best effort: without it only an un-dropped server leaks.
fn spawn_reaper(root: &Path) -> Option<Child> {
    const SCRIPT: &str = r#"
read -r _
if [ -f "$1/pid" ]; then kill -KILL "$(cat "$1/pid")" 2>/dev/null; fi
rm -rf "$1"
"#;
    Command::new("sh")
        .args(["-c", SCRIPT, "poolguard-helper-reaper"])
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

pub(super) fn free_loopback_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_error("bind 127.0.0.1:0 to find a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_error("read the free port"))?
        .port())
}
