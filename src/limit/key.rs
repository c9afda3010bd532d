//! Who a request belongs to: the user key and the ways to extract it.

use http::{Extensions, HeaderMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The identity per-user limits are keyed by. Cheap to clone: a key of up to
/// [`UserKey::INLINE`] bytes is stored inline (making or cloning one never allocates), a longer
/// one is shared.
///
/// Keys from the outside world are sanitized by [`UserKey::from_untrusted`]: printable ASCII
/// up to the configured length is kept as is; anything longer or containing other bytes is
/// replaced by a stable hash, so hostile keys cannot blow up memory or logs.
#[derive(Clone)]
pub struct UserKey(Repr);

#[derive(Clone)]
enum Repr {
    /// The first `len` bytes are the key (valid UTF-8).
    Inline {
        len: u8,
        bytes: [u8; UserKey::INLINE],
    },
    Shared(Arc<str>),
}

impl UserKey {
    /// The longest key stored without an allocation.
    pub const INLINE: usize = 46;

    /// A key from a trusted value (for example a user id set by an authentication layer).
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        let key: Arc<str> = key.into();
        Self::inline(&key).unwrap_or(UserKey(Repr::Shared(key)))
    }

    /// The key for `text` without an allocation, if it is short enough.
    fn inline(text: &str) -> Option<Self> {
        Self::inline_utf8(text.as_bytes())
    }

    /// The key for `utf8` (valid UTF-8, which the caller checked) without an allocation, if
    /// it is short enough.
    fn inline_utf8(utf8: &[u8]) -> Option<Self> {
        if utf8.len() > Self::INLINE {
            return None;
        }
        let mut bytes = [0u8; Self::INLINE];
        bytes[..utf8.len()].copy_from_slice(utf8);
        Some(UserKey(Repr::Inline {
            len: utf8.len() as u8,
            bytes,
        }))
    }

    /// A key from untrusted bytes (a header value): kept if it is 1..=`max_len` printable
    /// ASCII characters, otherwise replaced by `#` and a 16-digit hash of the bytes.
    pub fn from_untrusted(bytes: &[u8], max_len: usize) -> Self {
        let printable = !bytes.is_empty()
            && bytes.len() <= max_len
            && bytes.iter().all(|b| b.is_ascii_graphic());
        if printable {
            // Checked above: ASCII only, so valid UTF-8 (checked again only for a key too
            // long to keep inline).
            Self::inline_utf8(bytes).unwrap_or_else(|| {
                let text = std::str::from_utf8(bytes).unwrap_or_default();
                UserKey(Repr::Shared(Arc::from(text)))
            })
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            let hash = h.finish();
            let mut text = [b'#'; 17];
            for (i, digit) in text[1..].iter_mut().enumerate() {
                let nibble = (hash >> (60 - 4 * i)) & 0xf;
                *digit = b"0123456789abcdef"[nibble as usize];
            }
            // Hex digits: ASCII, and 17 bytes always fit inline.
            Self::inline(std::str::from_utf8(&text).unwrap_or_default())
                .unwrap_or_else(|| UserKey::new("#"))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever filled with UTF-8, cut at its length.
            Repr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Repr::Shared(text) => text,
        }
    }

    /// The key's bytes, for comparing and hashing without checking them as text again.
    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Shared(text) => text.as_bytes(),
        }
    }
}

impl PartialEq for UserKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for UserKey {}

impl Hash for UserKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As a `str` hashes by default: its bytes and a terminator, so no key is a prefix of
        // another's hash input.
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl PartialOrd for UserKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for UserKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Bytewise, as `str` orders.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserKey({:?})", self.as_str())
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Finds the user key of a request. Implemented for closures
/// `Fn(&HeaderMap, &Extensions) -> Option<UserKey>`.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key, or `None` for a request that per-user limits do not apply to.
    fn extract(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<UserKey>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&HeaderMap, &Extensions) -> Option<UserKey> + Send + Sync + 'static,
{
    fn extract(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<UserKey> {
        self(headers, extensions)
    }
}

/// The default extractor: a [`UserKey`] request extension (set by your authentication
/// layer), then the peer address when axum's `ConnectInfo<SocketAddr>` is present.
///
/// A header is a claim the client makes about itself: any client could pick a fresh id per
/// request to escape its limits, or send a victim's id to spend the victim's quota. So no
/// header is read unless the application says it is trusted —
/// [`trusting_header`](Self::trusting_header) — because a proxy or gateway in front sets it
/// and strips what clients send.
#[derive(Debug, Clone)]
pub struct DefaultKeyExtractor {
    trusted_header: Option<http::HeaderName>,
    max_len: usize,
}

impl DefaultKeyExtractor {
    /// The `UserKey` extension, then the peer address; keys from the peer are kept up to
    /// `max_len` characters.
    pub fn new(max_len: usize) -> Self {
        Self {
            trusted_header: None,
            max_len,
        }
    }

    /// The `UserKey` extension, then `header`, then the peer address. Use it only when
    /// something you control in front of the application sets `header` (and removes it from
    /// client requests): the value is taken as the user's identity. Values longer than
    /// `max_len` or not printable ASCII are replaced by a hash
    /// ([`UserKey::from_untrusted`]).
    pub fn trusting_header(header: http::HeaderName, max_len: usize) -> Self {
        Self {
            trusted_header: Some(header),
            max_len,
        }
    }

    /// The header read as the user's identity, if one is trusted.
    pub fn trusted_header(&self) -> Option<&http::HeaderName> {
        self.trusted_header.as_ref()
    }
}

impl Default for DefaultKeyExtractor {
    fn default() -> Self {
        Self::new(64)
    }
}

impl KeyExtractor for DefaultKeyExtractor {
    fn extract(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<UserKey> {
        if let Some(key) = extensions.get::<UserKey>() {
            return Some(key.clone());
        }
        if let Some(v) = self.trusted_header.as_ref().and_then(|h| headers.get(h)) {
            return Some(UserKey::from_untrusted(v.as_bytes(), self.max_len));
        }
        peer_key(extensions)
    }
}

#[cfg(feature = "axum")]
fn peer_key(extensions: &Extensions) -> Option<UserKey> {
    use axum::extract::ConnectInfo;
    extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(addr)| peer_key_of(addr.ip()))
}

/// `ip:` and the address, written into a buffer (no allocation for the key).
#[cfg(feature = "axum")]
fn peer_key_of(ip: std::net::IpAddr) -> UserKey {
    use std::io::Write;
    let mut buf = [0u8; UserKey::INLINE];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // "ip:" and the longest IPv6 text (39 bytes) always fit; a shared key only in case.
    if write!(cursor, "ip:{ip}").is_ok() {
        let len = cursor.position() as usize;
        if let Ok(text) = std::str::from_utf8(&buf[..len]) {
            return UserKey::from_untrusted(text.as_bytes(), UserKey::INLINE);
        }
    }
    UserKey::new(format!("ip:{ip}"))
}

#[cfg(not(feature = "axum"))]
fn peer_key(_: &Extensions) -> Option<UserKey> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_are_kept() {
        assert_eq!(UserKey::from_untrusted(b"user-42", 64).as_str(), "user-42");
    }

    #[test]
    fn hostile_keys_are_hashed_and_bounded() {
        let huge = vec![b'a'; 1 << 20];
        let k = UserKey::from_untrusted(&huge, 64);
        assert!(k.as_str().starts_with('#') && k.as_str().len() == 17);
        let binary = UserKey::from_untrusted(&[0xff, 0x00, b'\n', 0xc3], 64);
        assert!(binary.as_str().starts_with('#'));
        // Stable: the same bytes always give the same key.
        assert_eq!(
            binary,
            UserKey::from_untrusted(&[0xff, 0x00, b'\n', 0xc3], 64)
        );
        assert_ne!(binary, UserKey::from_untrusted(&[0xff], 64));
    }

    #[test]
    fn short_and_long_keys_compare_by_text() {
        let long = "u".repeat(UserKey::INLINE + 1);
        assert_eq!(UserKey::new(long.as_str()).as_str(), long);
        assert_eq!(UserKey::new("abc"), UserKey::from_untrusted(b"abc", 64));
        assert!(UserKey::new("a") < UserKey::new(long.as_str()));
        let hashed = UserKey::from_untrusted(b"\xff", 64);
        assert!(hashed.as_str()[1..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn the_default_never_reads_a_header() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", "victim".parse().unwrap());
        let x = DefaultKeyExtractor::default();
        assert_eq!(x.extract(&headers, &Extensions::new()), None);
        let mut ext = Extensions::new();
        ext.insert(UserKey::new("from-auth"));
        assert_eq!(x.extract(&headers, &ext).unwrap().as_str(), "from-auth");
    }

    #[cfg(feature = "axum")]
    #[test]
    fn the_default_falls_back_to_the_peer_address() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", "victim".parse().unwrap());
        let mut ext = Extensions::new();
        ext.insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [192, 0, 2, 7],
            4711,
        ))));
        let key = DefaultKeyExtractor::default().extract(&headers, &ext);
        assert_eq!(key.unwrap().as_str(), "ip:192.0.2.7");
    }

    #[test]
    fn a_trusted_header_comes_after_the_extension() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", "from-header".parse().unwrap());
        let mut ext = Extensions::new();
        let x =
            DefaultKeyExtractor::trusting_header(http::HeaderName::from_static("x-user-id"), 64);
        assert_eq!(x.extract(&headers, &ext).unwrap().as_str(), "from-header");
        ext.insert(UserKey::new("from-auth"));
        assert_eq!(x.extract(&headers, &ext).unwrap().as_str(), "from-auth");
    }

    #[test]
    fn closures_are_extractors() {
        let x = |h: &HeaderMap, _: &Extensions| {
            h.get("authorization")
                .map(|v| UserKey::from_untrusted(v.as_bytes(), 64))
        };
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "tok".parse().unwrap());
        assert_eq!(
            x.extract(&headers, &Extensions::new()).unwrap().as_str(),
            "tok"
        );
    }
}
