//! Running `initdb`, `cp` and `postgres` as an unprivileged OS user when this process is root.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::error::{io_error, ClusterError};

/// The unprivileged OS user the server runs as when this process is root.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunAs {
    pub(super) uid: u32,
    gid: u32,
}

impl RunAs {
    /// `None` when this process is not root: commands then run as ourselves.
    pub(super) fn for_current_process() -> Result<Option<RunAs>, ClusterError> {
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

    pub(super) fn apply(self, command: &mut Command) {
        command.uid(self.uid).gid(self.gid);
    }

    pub(super) fn chown(self, path: &Path) -> Result<(), ClusterError> {
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

pub(super) fn effective_uid() -> Result<u32, ClusterError> {
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
pub(super) fn run_command(
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
