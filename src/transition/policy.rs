//! The transition policy: a finite set of states and the `from -> to` edges allowed between
//! them, built in code or loaded from TOML or JSON.

use super::error::PolicyError;
use std::collections::HashMap;
use std::sync::Arc;

/// The most states a policy may hold.
pub const MAX_STATES: usize = 1024;
/// The longest state name, in bytes.
pub const MAX_STATE_NAME_LEN: usize = 64;

/// A state interned by a policy: a small index into its state list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(u16);

impl StateId {
    /// The position of the state in the policy's state list.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why [`TransitionPolicy::check`] refused a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// The source state is not a state of the policy.
    UnknownSource,
    /// The target state is not a state of the policy.
    UnknownTarget,
    /// Both states exist but the edge is not allowed.
    NotAllowed,
}

/// A refused transition, borrowing the names it was asked about (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked<'a> {
    /// The state the transition started from.
    pub from: &'a str,
    /// The state the transition tried to reach.
    pub to: &'a str,
    /// Why it was refused.
    pub reason: BlockReason,
}

impl std::fmt::Display for Blocked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (from, to) = (self.from, self.to);
        match self.reason {
            BlockReason::UnknownSource => write!(f, "{from} -> {to}: unknown state `{from}`"),
            BlockReason::UnknownTarget => write!(f, "{from} -> {to}: unknown state `{to}`"),
            BlockReason::NotAllowed => write!(f, "{from} -> {to} is not an allowed transition"),
        }
    }
}

impl std::error::Error for Blocked<'_> {}

/// States and the transitions allowed between them. Cheap to check: states are interned as
/// small indices and edges kept in an adjacency bitset.
///
/// # File format
///
/// ```toml
/// states = ["READY", "PROMOTED", "COMPLETED", "SPAM_REVIEW", "ARCHIVED"]
///
/// [[allow]]
/// from = "READY"
/// to = ["PROMOTED", "SPAM_REVIEW"]   # or a single string: to = "PROMOTED"
///
/// [[allow]]
/// from = "PROMOTED"
/// to = ["COMPLETED"]
/// ```
///
/// The JSON form has the same shape: `{"states": [...], "allow": [{"from": "READY", "to":
/// ["SPAM_REVIEW"]}]}`. Unknown keys are rejected. A state without an `allow` entry is
/// terminal. State names are 1 to 64 bytes of ASCII letters, digits, `_`, `-`, `.` and `:`
/// (they end up in SQL literals and metric labels).
///
/// Staying in the same state is not special: `check(s, s)` follows the edges like any other
/// pair, so allow `s -> s` explicitly if re-applying a status should count as valid.
#[derive(Debug, Clone)]
pub struct TransitionPolicy {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, StateId>,
    /// 64-bit words per adjacency row.
    words: usize,
    /// Row `from`, bit `to`: the edge is allowed.
    adj: Vec<u64>,
}

impl TransitionPolicy {
    /// Starts building a policy in code.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// The interned id of a state, if the policy knows it.
    pub fn state(&self, name: &str) -> Option<StateId> {
        self.index.get(name).copied()
    }

    /// The name of an interned state.
    ///
    /// # Panics
    /// If `id` comes from another policy with fewer states.
    pub fn name(&self, id: StateId) -> &str {
        &self.names[id.index()]
    }

    /// The shared name of a state, for metric labels (no allocation per use).
    pub(crate) fn shared_name(&self, id: StateId) -> &Arc<str> {
        &self.names[id.index()]
    }

    /// Every state, in declaration order.
    pub fn states(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(|n| &**n)
    }

    /// How many states the policy holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the policy holds no state (never true for a built policy).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether the edge between two interned states is allowed.
    pub fn allows(&self, from: StateId, to: StateId) -> bool {
        let word = self.adj[from.index() * self.words + to.index() / 64];
        word & (1u64 << (to.index() % 64)) != 0
    }

    /// Checks one transition by name. Pure, and allocates nothing.
    pub fn check<'a>(&self, from: &'a str, to: &'a str) -> Result<(), Blocked<'a>> {
        let blocked = |reason| Blocked { from, to, reason };
        let f = self
            .state(from)
            .ok_or(blocked(BlockReason::UnknownSource))?;
        let t = self.state(to).ok_or(blocked(BlockReason::UnknownTarget))?;
        if self.allows(f, t) {
            Ok(())
        } else {
            Err(blocked(BlockReason::NotAllowed))
        }
    }

    /// The states `state` may move to, in declaration order (empty for an unknown state).
    pub fn allowed_from(&self, state: &str) -> Vec<&str> {
        match self.state(state) {
            Some(f) => self
                .ids()
                .filter(|&t| self.allows(f, t))
                .map(|t| self.name(t))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The states that may move to `to`, in declaration order (empty for an unknown state).
    pub fn allowed_sources(&self, to: &str) -> Vec<&str> {
        match self.state(to) {
            Some(t) => self
                .ids()
                .filter(|&f| self.allows(f, t))
                .map(|f| self.name(f))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Every allowed edge, ordered by source then target declaration order.
    pub fn edges(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.ids().flat_map(move |f| {
            self.ids()
                .filter(move |&t| self.allows(f, t))
                .map(move |t| (self.name(f), self.name(t)))
        })
    }

    fn ids(&self) -> impl Iterator<Item = StateId> + Clone {
        (0..self.names.len() as u16).map(StateId)
    }
}

/// Builds a [`TransitionPolicy`] in code; [`build`](PolicyBuilder::build) validates the whole
/// and names the first bad entry (`states[i]`, `allow[i]`).
#[derive(Debug, Clone, Default)]
pub struct PolicyBuilder {
    states: Vec<(String, String)>,
    edges: Vec<(String, String, String)>,
}

impl PolicyBuilder {
    /// Adds one state.
    pub fn state(mut self, name: impl Into<String>) -> Self {
        let entry = format!("states[{}]", self.states.len());
        self.states.push((entry, name.into()));
        self
    }

    /// Adds states in order.
    pub fn states<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        names.into_iter().fold(self, |b, n| b.state(n))
    }

    /// Allows the transition `from -> to`.
    pub fn allow(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let entry = format!("allow[{}]", self.edges.len());
        self.edges.push((entry, from.into(), to.into()));
        self
    }

    /// Adds an edge named `entry` in errors (for loaders).
    pub(super) fn allow_entry(&mut self, entry: String, from: String, to: String) {
        self.edges.push((entry, from, to));
    }

    /// Validates the states and edges and builds the policy.
    pub fn build(self) -> Result<TransitionPolicy, PolicyError> {
        if self.states.is_empty() {
            return Err(PolicyError::NoStates);
        }
        if self.states.len() > MAX_STATES {
            return Err(PolicyError::TooManyStates {
                count: self.states.len(),
            });
        }
        let mut names = Vec::with_capacity(self.states.len());
        let mut index = HashMap::with_capacity(self.states.len());
        for (i, (entry, name)) in self.states.into_iter().enumerate() {
            check_state_name(&entry, &name)?;
            let name: Arc<str> = name.into();
            if index.insert(name.clone(), StateId(i as u16)).is_some() {
                return Err(PolicyError::DuplicateState {
                    entry,
                    name: name.to_string(),
                });
            }
            names.push(name);
        }
        let words = names.len().div_ceil(64);
        let mut adj = vec![0u64; names.len() * words];
        for (entry, from, to) in self.edges {
            let id = |name: &str| {
                index
                    .get(name)
                    .copied()
                    .ok_or_else(|| PolicyError::UnknownState {
                        entry: entry.clone(),
                        name: name.to_string(),
                    })
            };
            let (f, t) = (id(&from)?, id(&to)?);
            let (word, bit) = (f.index() * words + t.index() / 64, 1u64 << (t.index() % 64));
            if adj[word] & bit != 0 {
                return Err(PolicyError::DuplicateEdge { entry, from, to });
            }
            adj[word] |= bit;
        }
        Ok(TransitionPolicy {
            names,
            index,
            words,
            adj,
        })
    }
}

/// State names are embedded in SQL literals and metric labels: keep them to a safe set.
fn check_state_name(entry: &str, name: &str) -> Result<(), PolicyError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_STATE_NAME_LEN {
        "is longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        "may hold only ASCII letters, digits, `_`, `-`, `.` and `:`"
    } else {
        return Ok(());
    };
    Err(PolicyError::BadStateName {
        entry: entry.to_string(),
        name: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests;
