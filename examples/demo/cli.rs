//! Command-line parsing for the demo (no dependencies: a handful of flags).

use crate::app::GuardMode;
use std::net::SocketAddr;

pub const USAGE: &str = "\
usage:
  demo                              replay every seed incident with --guard off and full
  demo scenario NAME                replay one: dashboard-burst | slow-query | leaked-connections | spam-capture
  demo serve [--listen ADDR] [--pool-max N] [--guard full|generic|off]
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
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    Ok(serve)
}
