//! Command-line parsing for the demo (no dependencies: a handful of flags).

use crate::app::GuardMode;
use std::net::SocketAddr;
use std::time::Duration;

pub const USAGE: &str = "\
usage:
  demo                              replay every seed incident with --guard off and full
  demo scenario NAME                replay one: dashboard-burst | slow-query | leaked-connections | spam-capture
  demo serve [--listen ADDR] [--pool-max N] [--guard full|generic|off] [--kill-after DURATION]
  demo overload                     the overload benchmark (off, generic, full under one load)
  demo help

DATABASE_URL selects the server; without it a throwaway local PostgreSQL is started.";

/// What to run.
#[derive(Debug)]
pub enum Command {
    Help,
    Serve(Serve),
    /// Replay these scenarios.
    Replay(Vec<String>),
    /// The overload benchmark.
    Overload,
}

/// `serve` options.
#[derive(Debug)]
pub struct Serve {
    pub listen: SocketAddr,
    pub pool_max: usize,
    pub mode: GuardMode,
    /// The watchdog cancels queries running longer than this (default 30 s).
    pub kill_after: Duration,
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

pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    match args.next().as_deref() {
        None => Ok(Command::Replay(
            crate::scenarios::ALL
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )),
        Some("help") | Some("--help") | Some("-h") => Ok(Command::Help),
        Some("serve") => parse_serve(args).map(Command::Serve),
        Some("overload") => Ok(Command::Overload),
        Some("scenario") => {
            let name = args.next().ok_or("scenario needs a NAME")?;
            if !crate::scenarios::ALL.contains(&name.as_str()) {
                return Err(format!(
                    "unknown scenario `{name}`; one of: {}",
                    crate::scenarios::ALL.join(", ")
                ));
            }
            Ok(Command::Replay(vec![name]))
        }
        Some(other) => Err(format!("unknown command `{other}`")),
    }
}

fn parse_serve(mut args: impl Iterator<Item = String>) -> Result<Serve, String> {
    let mut serve = Serve {
        listen: "127.0.0.1:8080".parse().expect("valid default"),
        pool_max: 20,
        mode: GuardMode::Full,
        kill_after: Duration::from_secs(30),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => serve.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--pool-max" => {
                serve.pool_max = value()?.parse().map_err(|e| format!("--pool-max: {e}"))?;
                if serve.pool_max == 0 {
                    return Err("--pool-max must be at least 1".into());
                }
            }
            "--guard" => serve.mode = value()?.parse()?,
            "--kill-after" => serve.kill_after = parse_duration(&value()?)?,
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    Ok(serve)
}
