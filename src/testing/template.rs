//! The cached `initdb` template and copying it into a new cluster directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::binaries::PgBinaries;
use super::error::{io_error, ClusterError};
use super::user::{effective_uid, run_command, RunAs};
use super::{lock, unique_suffix, SUPERUSER};

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
pub(super) fn prepare_cluster_dir(
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
