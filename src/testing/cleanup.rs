//! The cleanup process that removes a cluster whose owner never dropped it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Cleans up after a server whose [`TestCluster`](super::TestCluster) is never dropped (a
/// `static`, a `process::exit`, a killed test process): a small `sh` process, in its own
/// process group, waits for its stdin pipe to close, which the kernel does when this process
/// ends; it then shuts the server down immediately and deletes the cluster directory.
#[derive(Debug)]
pub(super) struct Watchdog {
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
    pub(super) fn spawn(root: &Path) -> Option<Watchdog> {
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
    pub(super) fn disarm(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
