//! Errors of the transition module: bad policies, bad identifiers, failed updates.

use std::fmt;
use std::path::PathBuf;

/// Why a [`TransitionPolicy`](super::TransitionPolicy) could not be built or loaded. Entries are
/// named as in the file or the builder: `states[2]`, `allow[1]`, `allow[1].to[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy declares no state.
    NoStates,
    /// More than [`MAX_STATES`](super::policy::MAX_STATES) states.
    TooManyStates {
        /// How many were declared.
        count: usize,
    },
    /// A state name is empty, too long or holds characters outside the safe set.
    BadStateName {
        /// The entry that declares it.
        entry: String,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A state is declared twice.
    DuplicateState {
        /// The second declaration.
        entry: String,
        /// The state.
        name: String,
    },
    /// An edge names a state that is not declared.
    UnknownState {
        /// The edge.
        entry: String,
        /// The undeclared state.
        name: String,
    },
    /// The same edge is allowed twice.
    DuplicateEdge {
        /// The second occurrence.
        entry: String,
        /// Source state.
        from: String,
        /// Target state.
        to: String,
    },
    /// The text is not valid TOML or JSON, or does not have the policy's shape.
    Parse {
        /// `"TOML"` or `"JSON"`.
        format: &'static str,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the error, when the parser knows it.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The file's extension is neither `.toml` nor `.json`.
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::NoStates => f.write_str("invalid transition policy: `states` is empty"),
            PolicyError::TooManyStates { count } => write!(
                f,
                "invalid transition policy: `states` holds {count} states, at most {} allowed",
                super::policy::MAX_STATES
            ),
            PolicyError::BadStateName {
                entry,
                name,
                reason,
            } => write!(
                f,
                "invalid transition policy: `{entry}` state {name:?} {reason}"
            ),
            PolicyError::DuplicateState { entry, name } => write!(
                f,
                "invalid transition policy: `{entry}` declares state `{name}` a second time"
            ),
            PolicyError::UnknownState { entry, name } => write!(
                f,
                "invalid transition policy: `{entry}` names unknown state {name:?}"
            ),
            PolicyError::DuplicateEdge { entry, from, to } => write!(
                f,
                "invalid transition policy: `{entry}` allows `{from} -> {to}` a second time"
            ),
            PolicyError::Parse {
                format,
                line,
                column,
                message,
            } => {
                write!(f, "invalid transition policy {format}")?;
                if let Some(line) = line {
                    write!(f, " at line {line}")?;
                    if let Some(column) = column {
                        write!(f, ", column {column}")?;
                    }
                }
                write!(f, ": {}", message.trim_end())
            }
            PolicyError::Read { path, message } => {
                write!(
                    f,
                    "cannot read transition policy {}: {message}",
                    path.display()
                )
            }
            PolicyError::UnknownFormat { path } => write!(
                f,
                "transition policy {} must end in .toml or .json",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

/// A SQL identifier (table, column, function name) that was refused before any SQL was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentError {
    /// Which identifier: `"table"`, `"id_column"`, `"status_column"`, `"function"`.
    pub field: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for IdentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid SQL identifier: `{}` {:?} {}",
            self.field, self.value, self.reason
        )
    }
}

impl std::error::Error for IdentError {}

/// Why a guarded update did not produce an outcome.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpdateError {
    /// The target status is not a state of the policy; nothing was sent to the database.
    UnknownTarget(String),
    /// The database returned an error.
    Db(tokio_postgres::Error),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::UnknownTarget(to) => write!(
                f,
                "target status {to:?} is not a state of the transition policy"
            ),
            UpdateError::Db(e) => write!(f, "guarded status update failed: {e}"),
        }
    }
}

impl std::error::Error for UpdateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpdateError::Db(e) => Some(e),
            UpdateError::UnknownTarget(_) => None,
        }
    }
}

impl From<tokio_postgres::Error> for UpdateError {
    fn from(e: tokio_postgres::Error) -> Self {
        UpdateError::Db(e)
    }
}
