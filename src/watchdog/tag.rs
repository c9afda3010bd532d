//! Connection tags: `application_name = '{service}:{instance}:{class}:{id}'` set on checkout
//! (the prefix is the pool's own `application_name`, see [`Identity`](crate::identity::Identity)),
//! so the watchdog can tell which class (and, through the registry id, which route) a backend
//! serves, and whether it belongs to another instance.

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

/// The instance of this guard's service that `backend` belongs to, when it is another one.
fn other_instance(backend: &Backend, inner: &GuardInner) -> Option<String> {
    let identity = inner.identity.as_ref()?;
    let instance = identity.instance_of(backend.application.as_deref()?)?;
    (instance != identity.instance()).then(|| instance.to_string())
}

/// What events say about `backend`: its class and route when tagged, whether it is another
/// instance's, its query's fingerprint. Another instance's registry ids are not ours, so its
/// route stays unknown.
pub(crate) fn describe(backend: &Backend, inner: &GuardInner) -> BackendInfo {
    let other = other_instance(backend, inner);
    let app = backend.application.as_deref();
    let (tagged, route) = match (&other, inner.tag_prefix.get(), app) {
        (Some(instance), _, Some(app)) => {
            let service = inner.identity.as_ref().map(|i| i.service()).unwrap_or("");
            (parse(&format!("{service}:{instance}"), app), None)
        }
        (None, Some(prefix), Some(app)) => {
            let tagged = parse(prefix, app);
            let route = tagged
                .and_then(|(_, id)| inner.held_route(id))
                .and_then(|(route, _)| route)
                .map(|r| r.to_string());
            (tagged, route)
        }
        _ => (None, None),
    };
    BackendInfo {
        pid: backend.pid,
        role: backend.role.clone(),
        application: backend.application.clone(),
        class: tagged.map(|(c, _)| c),
        route,
        other_instance: other,
        fingerprint: fingerprint(&backend.query),
    }
}

/// The class of a tagged backend (of this instance or, in a wider scope, another one).
pub(crate) fn class_of(backend: &Backend, inner: &GuardInner) -> Option<Criticality> {
    let app = backend.application.as_deref()?;
    if let Some(instance) = other_instance(backend, inner) {
        let service = inner.identity.as_ref()?.service();
        return parse(&format!("{service}:{instance}"), app).map(|(c, _)| c);
    }
    parse(inner.tag_prefix.get()?, app).map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let t = tag("poolguard:pod-1", Criticality::NonCritical, 17);
        assert_eq!(t, "poolguard:pod-1:non_critical:17");
        assert_eq!(
            parse("poolguard:pod-1", &t),
            Some((Criticality::NonCritical, 17))
        );
        assert_eq!(parse("poolguard:pod-1", "poolguard:pod-1"), None);
        assert_eq!(parse("poolguard:pod-1", "poolguard:pod-1:watchdog"), None);
        assert_eq!(parse("poolguard:pod-2", &t), None);
        assert!(usable_prefix("poolguard:pod-1"));
        assert!(!usable_prefix("it's"));
    }
}
