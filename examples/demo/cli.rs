//! The demo's command line (clap): what to run and the options of `serve`.

use crate::app::GuardMode;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

/// poolguard's reference app and incident replay.
///
/// DATABASE_URL selects the server; without it a throwaway local PostgreSQL is started.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
pub struct Cli {
    /// What to run; without a command every seed incident is replayed, off vs full.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay one seed incident with --guard off and full.
    Scenario {
        /// dashboard-burst | slow-query | leaked-connections | spam-capture
        #[arg(value_parser = parse_scenario)]
        name: String,
    },
    /// Serve the reference app over HTTP.
    Serve(Serve),
    /// The overload benchmark (off, generic, full under one load).
    Overload,
}

impl Cli {
    /// The scenarios to replay when no command or `scenario NAME` was given.
    pub fn replay_names(&self) -> Option<Vec<String>> {
        match &self.command {
            None => Some(
                crate::scenarios::ALL
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
            Some(Command::Scenario { name }) => Some(vec![name.clone()]),
            _ => None,
        }
    }
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct Serve {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The most connections the pool opens.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_max: u32,
    /// How the app protects its pool: off, generic or full.
    #[arg(long = "guard", default_value = "full")]
    pub mode: GuardMode,
    /// The watchdog cancels queries running longer than this (500ms, 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub kill_after: Duration,
    /// Key per-user limits by the x-user-id header. Only behind a gateway that sets it:
    /// without this flag clients are keyed by their address, since any client can send any
    /// header.
    #[arg(long)]
    pub trust_user_header: bool,
    /// Hold the 429 of a client that comes back before its Retry-After for up to this (at
    /// most 10s) before answering it: a retry loop or a flood then costs a timer per
    /// connection instead of the CPU of answering it at full speed. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub early_retry_delay: Option<Duration>,
    /// The statement_timeout of the standard routes' connections (/api/messages), set on
    /// each checkout ahead of its first query; without it they keep the pool's (30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub standard_statement_timeout: Option<Duration>,
    /// Also export the OpenTelemetry database client metric names
    /// (db_client_connection_count{state}, _max, _pending_requests, _wait_time_seconds,
    /// _use_time_seconds, _timeouts_total) with this pool name.
    #[arg(long, value_name = "POOL_NAME")]
    pub otel_metric_names: Option<String>,
    /// This replica's name within the service (default: unique per process, from the host
    /// name and pid); its connections are named poolguard-demo:NAME.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// A direct URL to PostgreSQL for the watchdog (when the pool goes through a pooler);
    /// honours sslmode and sslrootcert.
    #[arg(long, value_name = "URL")]
    pub watchdog_url: Option<String>,
    /// Share per-user limits with the other replicas in this Redis (redis://host:port/).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
}

fn parse_scenario(name: &str) -> Result<String, String> {
    if crate::scenarios::ALL.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(format!("one of: {}", crate::scenarios::ALL.join(", ")))
    }
}

/// Parses `500ms`, `30s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (try 500ms, 30s, 2m)");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}
