//! Connection tags: `application_name = '{app}:{class}:{id}'` set on checkout, so the watchdog
//! can tell which class (and, through the registry id, which route) a backend serves.

use super::activity::Backend;
use super::fingerprint;
use crate::events::BackendInfo;
use crate::guard::GuardInner;
use crate::Criticality;

/// The tag of the connection with registry id `id`, acquired as `class`.
pub(crate) fn tag(prefix: &str, class: Criticality, id: u64) -> String {
    format!("{prefix}:{}:{id}", class.as_str())
}

/// Whether `prefix` can be put between single quotes as is and leaves room for the suffix
/// within Postgres's 63-byte `application_name`.
pub(crate) fn usable_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 63 - ":non_critical:".len() - 20
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The class and registry id in a tag made with `prefix`.
pub(crate) fn parse(prefix: &str, application: &str) -> Option<(Criticality, u64)> {
    let rest = application.strip_prefix(prefix)?.strip_prefix(':')?;
    let (class, id) = rest.split_once(':')?;
    let class = Criticality::ALL.into_iter().find(|c| c.as_str() == class)?;
    Some((class, id.parse().ok()?))
}

/// What events say about `backend`: its class and route when tagged, its query's fingerprint.
pub(crate) fn describe(backend: &Backend, inner: &GuardInner) -> BackendInfo {
    let tagged = match (inner.tag_prefix.get(), backend.application.as_deref()) {
        (Some(prefix), Some(app)) => parse(prefix, app),
        _ => None,
    };
    let route = tagged
        .and_then(|(_, id)| inner.held_route(id))
        .and_then(|(route, _)| route)
        .map(|r| r.to_string());
    BackendInfo {
        pid: backend.pid,
        role: backend.role.clone(),
        application: backend.application.clone(),
        class: tagged.map(|(c, _)| c),
        route,
        fingerprint: fingerprint(&backend.query),
    }
}

/// The class of a tagged backend.
pub(crate) fn class_of(backend: &Backend, inner: &GuardInner) -> Option<Criticality> {
    let prefix = inner.tag_prefix.get()?;
    parse(prefix, backend.application.as_deref()?).map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let t = tag("poolguard", Criticality::NonCritical, 17);
        assert_eq!(t, "poolguard:non_critical:17");
        assert_eq!(parse("poolguard", &t), Some((Criticality::NonCritical, 17)));
        assert_eq!(parse("poolguard", "poolguard"), None);
        assert_eq!(parse("poolguard", "poolguard:watchdog"), None);
        assert_eq!(parse("other", &t), None);
        assert!(usable_prefix("poolguard"));
        assert!(!usable_prefix("it's"));
    }
}
