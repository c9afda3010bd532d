//! [`LocalServer`]: a PostgreSQL server this process started, from choosing its port to
//! shutting it down.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::binaries::{find_binaries, PgBinaries};
use super::cleanup::Watchdog;
use super::error::{io_error, ClusterError};
use super::options::ClusterOptions;
use super::readiness::StartFailure;
use super::template::prepare_cluster_dir;
use super::user::RunAs;
use super::{lock, unique_suffix, SUPERUSER};

/// How long a server may take to exit after a shutdown signal before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long drop waits for an immediate shutdown before it kills the server.
const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports are tried when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// A PostgreSQL server this process started.
#[derive(Debug)]
pub(super) struct LocalServer {
    pub(super) binaries: PgBinaries,
    run_as: Option<RunAs>,
    root: PathBuf,
    pub(super) port: u16,
    options: ClusterOptions,
    pub(super) child: Mutex<Option<Child>>,
    watchdog: Option<Watchdog>,
}

impl LocalServer {
    pub(super) async fn start(options: ClusterOptions) -> Result<LocalServer, ClusterError> {
        let (binaries, run_as, root) = blocking(|| {
            let binaries = find_binaries()?;
            let run_as = RunAs::for_current_process()?;
            let root = std::env::temp_dir().join(format!("poolguard-pg-{}", unique_suffix()));
            if let Err(err) = prepare_cluster_dir(&binaries, run_as, &root) {
                let _ = fs::remove_dir_all(&root);
                return Err(err);
            }
            Ok((binaries, run_as, root))
        })
        .await?;

        let mut server = LocalServer {
            binaries,
            run_as,
            root,
            port: 0,
            options,
            child: Mutex::new(None),
            watchdog: None,
        };
        server.watchdog = Watchdog::spawn(&server.root);
        // On any error below, dropping `server` removes the directory.
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_loopback_port()?;
            match server.launch_and_wait().await {
                Ok(()) => return Ok(server),
                Err(StartFailure::PortTaken) => continue,
                Err(StartFailure::Fatal(err)) => return Err(err),
            }
        }
        Err(ClusterError::Io {
            context: format!("start PostgreSQL: {PORT_ATTEMPTS} ports in a row were taken"),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        })
    }

    pub(super) fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub(super) fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    pub(super) fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    pub(super) fn server_command(&self) -> Result<Command, ClusterError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(io_error(format!("open {}", self.log_file().display())))?;
        let log_for_stderr = log
            .try_clone()
            .map_err(io_error("duplicate the log file handle"))?;

        let mut command = Command::new(self.binaries.postgres());
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.root)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        let mut tls_settings = Vec::new();
        if let Some(tls) = &self.options.tls {
            let (cert, key) = (self.root.join("server.crt"), self.root.join("server.key"));
            let write = |path: &std::path::Path, pem: &str, mode: u32| {
                use std::os::unix::fs::PermissionsExt;
                fs::write(path, pem).map_err(io_error(format!("write {}", path.display())))?;
                fs::set_permissions(path, fs::Permissions::from_mode(mode))
                    .map_err(io_error(format!("chmod {}", path.display())))?;
                match self.run_as {
                    Some(run_as) => run_as.chown(path),
                    None => Ok(()),
                }
            };
            write(&cert, &tls.cert_pem, 0o644)?;
            // PostgreSQL refuses a key that others may read.
            write(&key, &tls.key_pem, 0o600)?;
            tls_settings = vec![
                ("ssl", "on".to_string()),
                ("ssl_cert_file", cert.display().to_string()),
                ("ssl_key_file", key.display().to_string()),
            ];
        }
        let fixed_settings = [
            ("max_connections", self.options.max_connections.to_string()),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("shared_buffers", "16MB".into()),
        ];
        let user_settings = self
            .options
            .settings
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()));
        let tls_settings = tls_settings.into_iter();
        for (name, value) in fixed_settings
            .into_iter()
            .chain(tls_settings)
            .chain(user_settings)
        {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        if let Some(run_as) = self.run_as {
            run_as.apply(&mut command);
        }
        Ok(command)
    }
    /// Immediate shutdown (SIGQUIT), then SIGKILL if it hangs. Blocks briefly; used by drop.
    pub(super) fn kill_now(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            shut_down(&mut child, "QUIT", DROP_SHUTDOWN_TIMEOUT);
        }
    }

    /// Fast shutdown (SIGINT): rolls back open transactions, checkpoints, exits.
    pub(super) async fn stop(&self) -> Result<(), ClusterError> {
        let Some(mut child) = lock(&self.child).take() else {
            return Ok(());
        };
        blocking(move || {
            shut_down(&mut child, "INT", SHUTDOWN_TIMEOUT);
            Ok(())
        })
        .await
    }

    pub(super) async fn restart(&self) -> Result<(), ClusterError> {
        self.stop().await?;
        match self.launch_and_wait().await {
            Ok(()) => Ok(()),
            Err(StartFailure::Fatal(err)) => Err(err),
            Err(StartFailure::PortTaken) => Err(ClusterError::Io {
                context: format!(
                    "restart PostgreSQL: port {} was taken while the server was stopped",
                    self.port
                ),
                source: io::Error::from(io::ErrorKind::AddrInUse),
            }),
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        self.kill_now();
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn free_loopback_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_error("bind 127.0.0.1:0 to find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_error("read the free port"))?
        .port();
    Ok(port)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ClusterError> + Send + 'static,
) -> Result<T, ClusterError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| ClusterError::Io {
            context: "background setup task failed".into(),
            source: io::Error::other(join.to_string()),
        })?
}

// ---------------------------------------------------------------------------------------
// Local server process
// ---------------------------------------------------------------------------------------

/// Signals a process with the `kill` command (no `unsafe` needed).
fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Sends `signal`, waits up to `timeout` for the process to exit, then kills it. Always reaps.
fn shut_down(child: &mut Child, signal: &str, timeout: Duration) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    if send_signal(child.id(), signal) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
