//! What events say about a backend: its class and route when its connection is tagged, whether
//! it is another instance's, its query's fingerprint.

use super::activity::Backend;
use super::fingerprint;
use super::tag;
use super::watched::WatchedGuard;
use crate::criticality::Criticality;
use crate::events::BackendInfo;

/// The instance of this guard's service that `backend` belongs to, when it is another one.
fn other_instance(backend: &Backend, guard: &dyn WatchedGuard) -> Option<String> {
    let identity = guard.identity()?;
    let instance = identity.instance_of(backend.application.as_deref()?)?;
    (instance != identity.instance()).then(|| instance.to_string())
}

/// What events say about `backend`: its class and route when tagged, whether it is another
/// instance's, its query's fingerprint. Another instance's registry ids are not ours, so its
/// route stays unknown.
pub(crate) fn describe(backend: &Backend, guard: &dyn WatchedGuard) -> BackendInfo {
    let other = other_instance(backend, guard);
    let app = backend.application.as_deref();
    let (tagged, route) = match (&other, guard.tag_prefix(), app) {
        (Some(instance), _, Some(app)) => {
            let service = guard.identity().map(|i| i.service()).unwrap_or("");
            (tag::parse(&format!("{service}:{instance}"), app), None)
        }
        (None, Some(prefix), Some(app)) => {
            let tagged = tag::parse(prefix, app);
            let route = tagged
                .and_then(|(_, id)| guard.held_route(id))
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
pub(crate) fn class_of(backend: &Backend, guard: &dyn WatchedGuard) -> Option<Criticality> {
    let app = backend.application.as_deref()?;
    if let Some(instance) = other_instance(backend, guard) {
        let service = guard.identity()?.service();
        return tag::parse(&format!("{service}:{instance}"), app).map(|(c, _)| c);
    }
    tag::parse(guard.tag_prefix()?, app).map(|(c, _)| c)
}
