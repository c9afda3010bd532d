//! [`TestRedis`]: a throwaway `redis-server` for tests of limits and dedupe shared across
//! replicas.
//!
//! Debian's `redis-server` (on `PATH` or in `/usr/bin`) runs in its own temporary directory
//! on a free loopback port, without persistence (`save ""`, `appendonly no`), as the
//! `postgres` (or `nobody`) OS user when this process is root. [`TestRedis::stop`] and
//! [`TestRedis::start_again`] take it away and bring it back on the same port, for outage
//! tests. Dropping it kills the process and removes the directory; a server that is never
//! dropped is killed once this process ends.
//!
//! ```no_run
//! use poolguard::testing::TestRedis;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = TestRedis::start().await?;
//! println!("REDIS_URL={}", redis.url());
//! redis.stop();
//! redis.start_again().await?;
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;
use std::process::Command;

use super::error::{io_error, ClusterError};
use super::process::ServerProcess;

/// A `redis-server` this process started.
#[derive(Debug)]
pub struct TestRedis {
    process: ServerProcess,
    binary: PathBuf,
}

impl TestRedis {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> Result<TestRedis, ClusterError> {
        let binary = find_redis_server()?;
        let process = ServerProcess::prepare("redis")?;
        let redis = TestRedis { process, binary };
        redis.start_again().await?;
        Ok(redis)
    }

    /// Starts the server again on the same port after [`stop`](Self::stop) (its data is
    /// gone: nothing is persisted). Does nothing else when it runs.
    pub async fn start_again(&self) -> Result<(), ClusterError> {
        self.process.kill();
        let mut command = Command::new(&self.binary);
        command
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.process.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(&self.process.root);
        self.process.launch(command).await
    }

    /// Kills the server (SIGKILL): clients see refused connections until
    /// [`start_again`](Self::start_again).
    pub fn stop(&self) {
        self.process.kill();
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.process.port)
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.port
    }
}

/// `redis-server` on `PATH`, else `/usr/bin/redis-server`.
fn find_redis_server() -> Result<PathBuf, ClusterError> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-server"));
    on_path
        .chain([PathBuf::from("/usr/bin/redis-server")])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io_error("find `redis-server` (install Debian's redis-server package)")(
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
}
