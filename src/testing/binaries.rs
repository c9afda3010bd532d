//! Finding working PostgreSQL server binaries ([`PgBinaries`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::error::ClusterError;
use super::lock;

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
}
