//! Connection tags: `application_name = '{service}:{instance}:{class}:{id}'` set on checkout
//! (the prefix is the pool's own `application_name`, see [`Identity`](crate::identity::Identity)),
//! so the watchdog can tell which class (and, through the registry id, which route) a backend
//! serves, and whether it belongs to another instance. This file is the codec; what events
//! say about a backend is in [`describe`](super::describe).

use crate::criticality::Criticality;

/// Appends to `out` the tag of the connection with registry id `id`, acquired as `class`
/// (into the checkout's one statement buffer, not a string of its own).
pub(crate) fn write_tag(out: &mut String, prefix: &str, class: Criticality, id: u64) {
    use std::fmt::Write;
    let _ = write!(out, "{prefix}:{}:{id}", class.as_str());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let mut t = String::from("'");
        write_tag(&mut t, "poolguard:pod-1", Criticality::NonCritical, 17);
        assert_eq!(
            t, "'poolguard:pod-1:non_critical:17",
            "appended to what was there"
        );
        let t = &t[1..];
        assert_eq!(
            parse("poolguard:pod-1", t),
            Some((Criticality::NonCritical, 17))
        );
        assert_eq!(parse("poolguard:pod-1", "poolguard:pod-1"), None);
        assert_eq!(parse("poolguard:pod-1", "poolguard:pod-1:watchdog"), None);
        assert_eq!(parse("poolguard:pod-2", t), None);
        assert!(usable_prefix("poolguard:pod-1"));
        assert!(!usable_prefix("it's"));
    }
}
