//! Throwaway PostgreSQL clusters for tests, examples and benchmarks (feature `testing`).
//!
//! [`TestCluster::start`] gives every test its own real PostgreSQL server: a fresh data
//! directory in a unique temporary directory, a free loopback port, trust authentication
//! for the `postgres` user, and settings tuned for speed over durability (`fsync=off`,
//! `synchronous_commit=off`, `full_page_writes=off`). Dropping the [`TestCluster`] kills the
//! server and deletes the directory.
//!
//! To keep many clusters cheap, `initdb` runs once per machine and PostgreSQL major version
//! into a cached template directory (`<temp dir>/poolguard-pg-template-<major>-<uid>`, where
//! `uid` owns the server files); each cluster starts from a copy of it.
//!
//! * **Binaries** are looked up on `PATH`, in `pg_config --bindir`, then under
//!   `/usr/lib/postgresql/*/bin` (highest version first); see [`find_binaries`].
//! * **Root**: `initdb` and `postgres` refuse to run as root, so when the process is root
//!   they (and the template copy) run as the `postgres` OS user, or `nobody` when there is
//!   none, via [`CommandExt::uid`] / [`gid`](CommandExt::gid); the server is then still a
//!   direct child of this process.
//! * **Cleanup**: dropping the cluster stops the server and deletes its directory. A cluster
//!   that is never dropped (kept in a `static`, or the process exits or is killed) is cleaned
//!   up by a small watchdog shell process once this process has ended.
//! * **`DATABASE_URL`**: when set, no server is started. The cluster creates a fresh,
//!   uniquely named database on that server, points [`TestCluster::url`] and
//!   [`TestCluster::pg_config`] at it and drops it again on drop. In that mode
//!   [`ClusterOptions::max_connections`] cannot be chosen, [`ClusterOptions::settings`] are
//!   applied with `ALTER DATABASE .. SET`, and [`TestCluster::stop`] /
//!   [`TestCluster::restart`] fail with [`ClusterError::External`]. Only plain-text (no TLS)
//!   connections are supported.
//!
//! ```no_run
//! use poolguard::testing::{ClusterOptions, TestCluster};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = TestCluster::start_with(ClusterOptions {
//!     max_connections: 20,
//!     ..ClusterOptions::default()
//! })
//! .await?;
//! let client = cluster.connect().await?;
//! let row = client.query_one("SELECT 1 + 1", &[]).await?;
//! assert_eq!(row.get::<_, i32>(0), 2);
//!
//! // Build a deadpool-postgres pool against the same server.
//! let manager = deadpool_postgres::Manager::new(cluster.pg_config(), tokio_postgres::NoTls);
//! let pool = deadpool_postgres::Pool::builder(manager).max_size(8).build()?;
//! # drop(pool);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// The database user of a local cluster (created by `initdb -U`).
const SUPERUSER: &str = "postgres";
/// The database a local cluster's URL points at.
const DEFAULT_DATABASE: &str = "postgres";
/// How often readiness is polled while a server starts.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a server may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after a shutdown signal before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long drop waits for an immediate shutdown before it kills the server.
const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long drop waits for an external database to be dropped.
const EXTERNAL_DROP_TIMEOUT: Duration = Duration::from_secs(15);
/// How many fresh ports are tried when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// How many lines of the server log an error message quotes.
const LOG_TAIL_LINES: usize = 30;

/// How a [`TestCluster`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The server's `max_connections` (default 100). Ignored when `DATABASE_URL` is used:
    /// an existing server's limit cannot be changed.
    pub max_connections: u32,
    /// Extra server settings, passed as `-c name=value` after the built-in ones (so they may
    /// override e.g. `fsync` or `shared_buffers`; default none). With `DATABASE_URL`
    /// they are applied to the fresh database with `ALTER DATABASE .. SET name = value`.
    pub settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            max_connections: 100,
            settings: Vec::new(),
        }
    }
}

/// Why a [`TestCluster`] could not be started, stopped or reached.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClusterError {
    /// No directory holding both `initdb` and `postgres` (in a working state) was found.
    BinariesNotFound {
        /// The directories that were looked in, in order.
        searched: Vec<PathBuf>,
    },
    /// A file-system or process operation failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A helper command (`initdb`, `cp`, ..) exited unsuccessfully.
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// Its standard output and error.
        output: String,
    },
    /// The server process exited while starting.
    ServerExited {
        /// How it ended.
        status: ExitStatus,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server did not accept a connection in time.
    StartTimeout {
        /// How long was waited.
        waited: Duration,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// Talking to the server failed.
    Postgres {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: tokio_postgres::Error,
    },
    /// `DATABASE_URL` is not a usable connection string.
    InvalidDatabaseUrl {
        /// Why it was rejected.
        reason: String,
    },
    /// The operation needs a server this process started, but `DATABASE_URL` was used.
    External {
        /// The operation that was refused.
        operation: &'static str,
    },
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::BinariesNotFound { searched } => {
                write!(
                    f,
                    "PostgreSQL server binaries not found (looked on PATH, in `pg_config --bindir`, \
                     under /usr/lib/postgresql/*/bin). Install them: `apt-get install -y postgresql`, \
                     or set DATABASE_URL to a server you own."
                )?;
                if !searched.is_empty() {
                    let dirs: Vec<String> =
                        searched.iter().map(|d| d.display().to_string()).collect();
                    write!(f, " Searched: {}.", dirs.join(", "))?;
                }
                Ok(())
            }
            ClusterError::Io { context, source } => write!(f, "{context}: {source}"),
            ClusterError::CommandFailed {
                command,
                status,
                output,
            } => write!(f, "`{command}` failed ({status}):\n{output}"),
            ClusterError::ServerExited { status, log_tail } => write!(
                f,
                "the PostgreSQL server exited while starting ({status}); end of its log:\n{log_tail}"
            ),
            ClusterError::StartTimeout { waited, log_tail } => write!(
                f,
                "the PostgreSQL server did not accept connections within {waited:?}; end of its log:\n{log_tail}"
            ),
            ClusterError::Postgres { context, source } => write!(f, "{context}: {source}"),
            ClusterError::InvalidDatabaseUrl { reason } => {
                write!(f, "DATABASE_URL is not usable: {reason}")
            }
            ClusterError::External { operation } => write!(
                f,
                "`{operation}` is not available: the cluster is a database on the server named by \
                 DATABASE_URL, which this process does not control (unset DATABASE_URL to get a \
                 local server)"
            ),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Io { source, .. } => Some(source),
            ClusterError::Postgres { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

fn pg_error(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Postgres { context, source }
}

// ---------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------

/// A directory holding working PostgreSQL server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    dir: PathBuf,
    major_version: u32,
}

impl PgBinaries {
    /// The directory holding `initdb` and `postgres`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PostgreSQL major version (`15` for 15.4), from `postgres --version`.
    pub fn major_version(&self) -> u32 {
        self.major_version
    }

    /// The path of `initdb`.
    pub fn initdb(&self) -> PathBuf {
        self.dir.join("initdb")
    }

    /// The path of `postgres`.
    pub fn postgres(&self) -> PathBuf {
        self.dir.join("postgres")
    }
}

/// Finds the server binaries in the usual places: every `PATH` entry, `pg_config --bindir`,
/// then `/usr/lib/postgresql/*/bin` from the highest version down.
pub fn find_binaries() -> Result<PgBinaries, ClusterError> {
    static FOUND: Mutex<Option<PgBinaries>> = Mutex::new(None);
    let mut found = lock(&FOUND);
    if let Some(binaries) = found.as_ref() {
        return Ok(binaries.clone());
    }
    let binaries = find_binaries_in(&default_search_dirs())?;
    *found = Some(binaries.clone());
    Ok(binaries)
}

/// Finds the server binaries in the first of `dirs` that holds executable `initdb` and
/// `postgres` files and whose `postgres --version` answers; fails with
/// [`ClusterError::BinariesNotFound`] (whose message says how to install PostgreSQL)
/// when none does.
pub fn find_binaries_in(dirs: &[PathBuf]) -> Result<PgBinaries, ClusterError> {
    dirs.iter()
        .find_map(|dir| usable_binaries(dir))
        .ok_or_else(|| ClusterError::BinariesNotFound {
            searched: dirs.to_vec(),
        })
}

fn usable_binaries(dir: &Path) -> Option<PgBinaries> {
    if !is_executable(&dir.join("initdb")) || !is_executable(&dir.join("postgres")) {
        return None;
    }
    let output = Command::new(dir.join("postgres"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let major_version = parse_major_version(&String::from_utf8_lossy(&output.stdout))?;
    Some(PgBinaries {
        dir: dir.to_path_buf(),
        major_version,
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Reads the major version from `postgres (PostgreSQL) 15.4 (Debian 15.4-1)`.
fn parse_major_version(version_output: &str) -> Option<u32> {
    let after_name = version_output.split(')').nth(1)?;
    let version = after_name.split_whitespace().next()?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn default_search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(pg_config_bindir());
    dirs.extend(debian_versioned_bindirs());
    dirs
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// `/usr/lib/postgresql/<version>/bin`, highest version first.
fn debian_versioned_bindirs() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

// ---------------------------------------------------------------------------------------
// Who runs the server
// ---------------------------------------------------------------------------------------

/// The unprivileged OS user the server runs as when this process is root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// `None` when this process is not root: commands then run as ourselves.
    fn for_current_process() -> Result<Option<RunAs>, ClusterError> {
        if effective_uid()? != 0 {
            return Ok(None);
        }
        ["postgres", "nobody"]
            .iter()
            .find_map(|name| RunAs::lookup(name))
            .map(Some)
            .ok_or_else(|| ClusterError::Io {
                context: "running as root, but neither a `postgres` nor a `nobody` OS user \
                          exists to run PostgreSQL as"
                    .into(),
                source: io::Error::from(io::ErrorKind::NotFound),
            })
    }

    fn lookup(user: &str) -> Option<RunAs> {
        Some(RunAs {
            uid: id_of(user, "-u")?,
            gid: id_of(user, "-g")?,
        })
    }

    fn apply(self, command: &mut Command) {
        command.uid(self.uid).gid(self.gid);
    }

    fn chown(self, path: &Path) -> Result<(), ClusterError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(io_error(format!("chown {}", path.display())))
    }
}

/// `id -u USER` / `id -g USER`.
fn id_of(user: &str, flag: &str) -> Option<u32> {
    let output = Command::new("id")
        .args([flag, user])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

fn effective_uid() -> Result<u32, ClusterError> {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let output = Command::new("id")
        .arg("-u")
        .output()
        .map_err(io_error("run `id -u`"))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| ClusterError::Io {
            context: "read the effective uid from `id -u`".into(),
            source: io::Error::from(io::ErrorKind::InvalidData),
        })
}

/// Runs a helper command (as `run_as` when set) and fails with its output when it fails.
fn run_command(
    program: &Path,
    args: &[&std::ffi::OsStr],
    run_as: Option<RunAs>,
    cwd: &Path,
) -> Result<(), ClusterError> {
    let mut command = Command::new(program);
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    if let Some(run_as) = run_as {
        run_as.apply(&mut command);
    }
    let command_line = format!(
        "{} {}",
        program.display(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command
        .output()
        .map_err(io_error(format!("run `{command_line}`")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(ClusterError::CommandFailed {
        command: command_line,
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

// ---------------------------------------------------------------------------------------
// Directories
// ---------------------------------------------------------------------------------------

/// A name no other cluster of any process will pick: pid, a process-wide counter, time.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!("{}-{count}-{nanos}", std::process::id())
}

fn create_owned_dir(path: &Path, run_as: Option<RunAs>) -> Result<(), ClusterError> {
    fs::create_dir(path).map_err(io_error(format!("create {}", path.display())))?;
    if let Some(run_as) = run_as {
        run_as.chown(path)?;
    }
    Ok(())
}

fn template_dir(binaries: &PgBinaries, owner_uid: u32) -> PathBuf {
    std::env::temp_dir().join(format!(
        "poolguard-pg-template-{}-{owner_uid}",
        binaries.major_version()
    ))
}

fn is_complete_template(dir: &Path, binaries: &PgBinaries) -> bool {
    fs::read_to_string(dir.join("PG_VERSION"))
        .map(|v| v.trim() == binaries.major_version().to_string())
        .unwrap_or(false)
}

/// Returns the cached `initdb` output, building it first if needed. The template is built
/// in a unique directory and renamed into place, so concurrent builders (threads or
/// processes) never see a half-written template; the loser of the race discards its copy.
fn ensure_template(binaries: &PgBinaries, run_as: Option<RunAs>) -> Result<PathBuf, ClusterError> {
    // One builder per process; other processes are handled by the atomic rename.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = lock(&BUILDING);

    let owner_uid = match run_as {
        Some(run_as) => run_as.uid,
        None => effective_uid()?,
    };
    let template = template_dir(binaries, owner_uid);
    if is_complete_template(&template, binaries) {
        return Ok(template);
    }
    discard_broken_template(&template);

    let build_dir = template.with_file_name(format!(
        "{}.build-{}",
        template
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        unique_suffix()
    ));
    let built = build_template(binaries, run_as, &build_dir);
    if let Err(err) = built {
        let _ = fs::remove_dir_all(&build_dir);
        return Err(err);
    }
    if fs::rename(&build_dir, &template).is_err() {
        // Another process won the race; its template is as good as ours.
        let _ = fs::remove_dir_all(&build_dir);
    }
    if is_complete_template(&template, binaries) {
        Ok(template)
    } else {
        Err(ClusterError::Io {
            context: format!("install the initdb template at {}", template.display()),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }
}

/// Moves an unusable template out of the way (rename first, so nobody copies it half-deleted).
fn discard_broken_template(template: &Path) {
    if !template.exists() {
        return;
    }
    let trash = template.with_file_name(format!(
        "{}.stale-{}",
        template
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        unique_suffix()
    ));
    if fs::rename(template, &trash).is_ok() {
        let _ = fs::remove_dir_all(&trash);
    }
}

fn build_template(
    binaries: &PgBinaries,
    run_as: Option<RunAs>,
    build_dir: &Path,
) -> Result<(), ClusterError> {
    create_owned_dir(build_dir, run_as)?;
    let args = [
        "-D".as_ref(),
        build_dir.as_os_str(),
        "-A".as_ref(),
        "trust".as_ref(),
        "-U".as_ref(),
        SUPERUSER.as_ref(),
        "--no-sync".as_ref(),
        "-E".as_ref(),
        "UTF8".as_ref(),
        "--locale=C".as_ref(),
        // 1 MB WAL segments instead of 16 MB: a smaller template is quicker to copy.
        "--wal-segsize=1".as_ref(),
    ];
    run_command(&binaries.initdb(), &args, run_as, build_dir)
}

/// Creates the cluster's own directory and copies the template into `<root>/data`.
fn prepare_cluster_dir(
    binaries: &PgBinaries,
    run_as: Option<RunAs>,
    root: &Path,
) -> Result<(), ClusterError> {
    create_owned_dir(root, run_as)?;
    let data = root.join("data");
    let copy_template = || {
        let template = ensure_template(binaries, run_as)?;
        let args = ["-a".as_ref(), template.as_os_str(), data.as_os_str()];
        run_command(Path::new("cp"), &args, run_as, root)
    };
    copy_template().or_else(|_| {
        // The shared template may have been removed or replaced while we copied it:
        // start over once from a freshly checked (or rebuilt) template.
        let _ = fs::remove_dir_all(&data);
        copy_template()
    })
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Cleans up after a server whose [`TestCluster`] is never dropped (a `static`, a
/// `process::exit`, a killed test process): a small `sh` process, in its own process group,
/// waits for its stdin pipe to close, which the kernel does when this process ends; it
/// then shuts the server down immediately and deletes the cluster directory.
#[derive(Debug)]
struct Watchdog {
    process: Child,
}

impl Watchdog {
    const SCRIPT: &'static str = r#"
read -r _
pidfile="$1/data/postmaster.pid"
if [ -f "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile")
    kill -QUIT "$pid" 2>/dev/null
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 100 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
"#;

    /// Best effort: without a watchdog only an un-dropped cluster would leak.
    fn spawn(root: &Path) -> Option<Watchdog> {
        let spawned = Command::new("sh")
            .args(["-c", Self::SCRIPT, "poolguard-pg-watchdog"])
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(process) => Some(Watchdog { process }),
            Err(err) => {
                tracing::warn!(error = %err, "no cleanup watchdog for the test cluster");
                None
            }
        }
    }

    /// Stops the watchdog without letting it clean up: the owner does that itself.
    fn disarm(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A PostgreSQL server this process started.
#[derive(Debug)]
struct LocalServer {
    binaries: PgBinaries,
    run_as: Option<RunAs>,
    root: PathBuf,
    port: u16,
    options: ClusterOptions,
    child: Mutex<Option<Child>>,
    watchdog: Option<Watchdog>,
}

/// What happened to one start attempt.
enum StartFailure {
    /// The port was taken by someone else: try another.
    PortTaken,
    Fatal(ClusterError),
}

impl LocalServer {
    async fn start(options: ClusterOptions) -> Result<LocalServer, ClusterError> {
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

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    fn server_command(&self) -> Result<Command, ClusterError> {
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
        for (name, value) in fixed_settings.into_iter().chain(user_settings) {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        if let Some(run_as) = self.run_as {
            run_as.apply(&mut command);
        }
        Ok(command)
    }

    /// Starts `postgres` on `self.port` and waits until it accepts a connection.
    async fn launch_and_wait(&self) -> Result<(), StartFailure> {
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

    /// Immediate shutdown (SIGQUIT), then SIGKILL if it hangs. Blocks briefly; used by drop.
    fn kill_now(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            shut_down(&mut child, "QUIT", DROP_SHUTDOWN_TIMEOUT);
        }
    }

    /// Fast shutdown (SIGINT): rolls back open transactions, checkpoints, exits.
    async fn stop(&self) -> Result<(), ClusterError> {
        let Some(mut child) = lock(&self.child).take() else {
            return Ok(());
        };
        blocking(move || {
            shut_down(&mut child, "INT", SHUTDOWN_TIMEOUT);
            Ok(())
        })
        .await
    }

    async fn restart(&self) -> Result<(), ClusterError> {
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

// ---------------------------------------------------------------------------------------
// External server (DATABASE_URL)
// ---------------------------------------------------------------------------------------

/// A fresh database on a server named by `DATABASE_URL`.
#[derive(Debug)]
struct ExternalDatabase {
    admin_url: String,
    admin_config: tokio_postgres::Config,
    database: String,
}

impl ExternalDatabase {
    async fn create(admin_url: String, options: &ClusterOptions) -> Result<Self, ClusterError> {
        let admin_config: tokio_postgres::Config =
            admin_url.parse().map_err(|e: tokio_postgres::Error| {
                ClusterError::InvalidDatabaseUrl {
                    reason: e.to_string(),
                }
            })?;
        let database = format!("poolguard_test_{}", unique_suffix().replace('-', "_"));
        let client = connect_config(&admin_config, "connect to DATABASE_URL").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&database)))
            .await
            .map_err(pg_error(format!("CREATE DATABASE {database}")))?;
        let external = ExternalDatabase {
            admin_url,
            admin_config,
            database,
        };
        // From here on, dropping `external` drops the database again.
        for (name, value) in &options.settings {
            let sql = format!(
                "ALTER DATABASE {} SET {} = {}",
                quote_ident(&external.database),
                quote_ident(name),
                quote_literal(value)
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(pg_error(format!("apply setting {name}={value}")))?;
        }
        Ok(external)
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut config = self.admin_config.clone();
        config.dbname(&self.database);
        config
    }

    fn url(&self) -> String {
        with_database(&self.admin_url, &self.database)
    }

    fn port(&self) -> u16 {
        self.admin_config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(5432)
    }

    /// Drops the database from a fresh thread with its own runtime (drop may run inside or
    /// outside a runtime), waiting at most [`EXTERNAL_DROP_TIMEOUT`].
    fn drop_database(&self) {
        let config = self.admin_config.clone();
        let drop_sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(&self.database));
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("poolguard-drop-db".into())
            .spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(async {
                        let work = async {
                            let client = connect_config(&config, "connect to drop").await.ok()?;
                            // `WITH (FORCE)` (PostgreSQL 13+) ends sessions still connected.
                            let forced = format!("{drop_sql} WITH (FORCE)");
                            if client.batch_execute(&forced).await.is_err() {
                                client.batch_execute(&drop_sql).await.ok()?;
                            }
                            Some(())
                        };
                        let _ = tokio::time::timeout(EXTERNAL_DROP_TIMEOUT, work).await;
                    });
                }
                let _ = done_tx.send(());
            });
        if spawned.is_ok() {
            let _ = done_rx.recv_timeout(EXTERNAL_DROP_TIMEOUT + Duration::from_secs(1));
        }
    }
}

impl Drop for ExternalDatabase {
    fn drop(&mut self) {
        self.drop_database();
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Points a connection string at another database: the path of a URL, or a `dbname=`
/// appended to a key=value string (later keys win).
fn with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = ["postgres://", "postgresql://"]
        .iter()
        .find(|scheme| url.starts_with(*scheme))
        .map(|scheme| scheme.len())
    else {
        return format!("{url} dbname={database}");
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after_authority) = rest.split_at(authority_end);
    let query = after_authority
        .find('?')
        .map(|i| &after_authority[i..])
        .unwrap_or("");
    format!("{}{authority}/{database}{query}", &url[..scheme_end])
}

async fn connect_config(
    config: &tokio_postgres::Config,
    context: &str,
) -> Result<tokio_postgres::Client, ClusterError> {
    let (client, connection) = config.connect(NoTls).await.map_err(pg_error(context))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "test cluster connection ended with an error");
        }
    });
    Ok(client)
}

// ---------------------------------------------------------------------------------------
// TestCluster
// ---------------------------------------------------------------------------------------

/// A throwaway PostgreSQL server (or, with `DATABASE_URL`, a throwaway database).
///
/// Dropping it shuts the server down immediately and deletes its directory (or drops the
/// database); drop never panics and may happen inside or outside a tokio runtime.
#[derive(Debug)]
pub struct TestCluster {
    target: Target,
}

#[derive(Debug)]
enum Target {
    Local(LocalServer),
    External(ExternalDatabase),
}

impl TestCluster {
    /// Starts a cluster with [`ClusterOptions::default`].
    pub async fn start() -> Result<TestCluster, ClusterError> {
        Self::start_with(ClusterOptions::default()).await
    }

    /// Starts a cluster with `opts`, or creates a database on `DATABASE_URL` when that is set
    /// (then `max_connections` is ignored; see the [module docs](self)).
    pub async fn start_with(opts: ClusterOptions) -> Result<TestCluster, ClusterError> {
        let target = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => {
                Target::External(ExternalDatabase::create(url, &opts).await?)
            }
            _ => Target::Local(LocalServer::start(opts).await?),
        };
        Ok(TestCluster { target })
    }

    /// The connection URL, `postgres://postgres@127.0.0.1:PORT/postgres` for a local server.
    pub fn url(&self) -> String {
        match &self.target {
            Target::Local(server) => format!(
                "postgres://{SUPERUSER}@127.0.0.1:{}/{DEFAULT_DATABASE}",
                server.port
            ),
            Target::External(external) => external.url(),
        }
    }

    /// A connection config for the same target as [`url`](Self::url), e.g. for
    /// `deadpool_postgres::Manager::new`.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        match &self.target {
            Target::Local(server) => server.config(DEFAULT_DATABASE),
            Target::External(external) => external.config(),
        }
    }

    /// Opens a connection (without TLS) and spawns its connection task on the current tokio
    /// runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ClusterError> {
        connect_config(&self.pg_config(), &format!("connect to {}", self.url())).await
    }

    /// The server's TCP port on 127.0.0.1 (the `DATABASE_URL` port in external mode).
    pub fn port(&self) -> u16 {
        match &self.target {
            Target::Local(server) => server.port,
            Target::External(external) => external.port(),
        }
    }

    /// Whether this cluster is a database on the server named by `DATABASE_URL`.
    pub fn is_external(&self) -> bool {
        matches!(self.target, Target::External(_))
    }

    /// The server's data directory; `None` in external mode.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.local().map(LocalServer::data_dir)
    }

    /// The file the server logs to; `None` in external mode.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.local().map(LocalServer::log_file)
    }

    /// Stops the server with a fast shutdown, keeping its data directory; does nothing when
    /// already stopped. Fails with [`ClusterError::External`] in external mode.
    pub async fn stop(&self) -> Result<(), ClusterError> {
        self.local_or("stop")?.stop().await
    }

    /// Stops the server if it runs, starts it again on the same port and data directory and
    /// waits until it accepts connections. Fails with [`ClusterError::External`] in external
    /// mode.
    pub async fn restart(&self) -> Result<(), ClusterError> {
        self.local_or("restart")?.restart().await
    }

    fn local(&self) -> Option<&LocalServer> {
        match &self.target {
            Target::Local(server) => Some(server),
            Target::External(_) => None,
        }
    }

    fn local_or(&self, operation: &'static str) -> Result<&LocalServer, ClusterError> {
        self.local().ok_or(ClusterError::External { operation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 15.4 (Debian 15.4-1.pgdg120+1)\n"),
            Some(15)
        );
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 17beta1\n"),
            Some(17)
        );
        assert_eq!(parse_major_version("nonsense"), None);
    }

    #[test]
    fn rewrites_the_database_of_urls_and_key_value_strings() {
        assert_eq!(
            with_database("postgres://u:p@h:5433/app?sslmode=disable", "t1"),
            "postgres://u:p@h:5433/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "t1"), "postgresql://h/t1");
        assert_eq!(
            with_database("postgres://h?x=1", "t1"),
            "postgres://h/t1?x=1"
        );
        assert_eq!(
            with_database("host=h user=u", "t1"),
            "host=h user=u dbname=t1"
        );
    }

    #[test]
    fn quotes_identifiers_and_literals() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
