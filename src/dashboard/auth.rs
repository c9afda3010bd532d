//! Who may see the dashboard: a bearer token when one is configured, loopback peers otherwise.
//!
//! A configured token that is empty or only whitespace is a misconfiguration, not "no token":
//! it never authorises anything, so every request gets 401 (the router logs an error once).
//!
//! The loopback fallback trusts the TCP peer address. Behind a reverse proxy on the same host
//! every public request arrives from loopback, so without a token a request that carries
//! `Forwarded`, `X-Forwarded-For` or `X-Real-IP` is refused (403): it came through a proxy and
//! its real origin is unknown. Configure a token to serve the dashboard through a proxy.

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// Where a token may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenSources {
    /// `Authorization: Bearer <token>` only.
    Header,
    /// The header, or `?token=<token>` (the HTML page, which a browser opens by URL).
    HeaderOrQuery,
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether a configured token can be used at all: an empty or whitespace-only one cannot.
pub(crate) fn token_is_usable(token: &str) -> bool {
    !token.trim().is_empty()
}

/// Headers a reverse proxy adds to say who the original client was.
const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

fn came_through_proxy(headers: &HeaderMap) -> bool {
    PROXY_HEADERS.iter().any(|h| headers.contains_key(*h))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn query_token(uri: &Uri) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Q {
        token: Option<String>,
    }
    axum::extract::Query::<Q>::try_from_uri(uri).ok()?.0.token
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// A token is configured and the request did not present it: 401.
    Unauthorized,
    /// No token is configured and the peer is not loopback (or unknown): 403, with why.
    Forbidden(&'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"poolguard\"")],
                "a valid bearer token is required\n",
            )
                .into_response(),
            Denied::Forbidden(why) => (StatusCode::FORBIDDEN, why).into_response(),
        }
    }
}

/// Decides whether a request may see the dashboard.
///
/// With a token: [`Denied::Unauthorized`] unless the request presents it; an empty or
/// whitespace-only configured token refuses everyone. Without a token: [`Denied::Forbidden`]
/// unless the peer (from `ConnectInfo<SocketAddr>`) is a loopback address and the request
/// carries no proxy header (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`); a server started
/// without connect info is refused too, naming the fix.
pub(crate) fn authorize(
    token: Option<&str>,
    sources: TokenSources,
    headers: &HeaderMap,
    uri: &Uri,
    peer: Option<&ConnectInfo<SocketAddr>>,
) -> Result<(), Denied> {
    match token {
        Some(expected) if !token_is_usable(expected) => Err(Denied::Unauthorized),
        Some(expected) => {
            let from_query = match sources {
                TokenSources::HeaderOrQuery => query_token(uri),
                TokenSources::Header => None,
            };
            match bearer(headers).or(from_query.as_deref()) {
                Some(p) if constant_time_eq(p.as_bytes(), expected.as_bytes()) => Ok(()),
                _ => Err(Denied::Unauthorized),
            }
        }
        None if came_through_proxy(headers) => Err(Denied::Forbidden(
            "the dashboard has no token configured and does not answer requests forwarded by a \
             proxy (Forwarded, X-Forwarded-For or X-Real-IP present): set a token\n",
        )),
        None => match peer {
            Some(ConnectInfo(addr)) if addr.ip().is_loopback() => Ok(()),
            Some(_) => Err(Denied::Forbidden(
                "the dashboard has no token configured and answers loopback clients only\n",
            )),
            None => Err(Denied::Forbidden(
                "the dashboard has no token configured and cannot see the peer address: serve \
                 with into_make_service_with_connect_info::<SocketAddr>() or set a token\n",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    fn status(r: Result<(), Denied>) -> u16 {
        r.map_or_else(|d| d.into_response().status().as_u16(), |()| 200)
    }

    #[test]
    fn tokens_are_checked_by_header_and_on_the_page_by_query() {
        let uri: Uri = "/admin/self-healing?token=s3cret".parse().unwrap();
        let plain: Uri = "/admin/self-healing".parse().unwrap();
        let t = Some("s3cret");
        let h = TokenSources::Header;
        let q = TokenSources::HeaderOrQuery;
        assert_eq!(
            status(authorize(
                t,
                h,
                &headers(Some("Bearer s3cret")),
                &plain,
                None
            )),
            200
        );
        assert_eq!(
            status(authorize(
                t,
                h,
                &headers(Some("bearer s3cret")),
                &plain,
                None
            )),
            200
        );
        assert_eq!(
            status(authorize(
                t,
                h,
                &headers(Some("Bearer wrong")),
                &plain,
                None
            )),
            401
        );
        assert_eq!(status(authorize(t, h, &headers(None), &plain, None)), 401);
        assert_eq!(status(authorize(t, h, &headers(None), &uri, None)), 401);
        assert_eq!(status(authorize(t, q, &headers(None), &uri, None)), 200);
        let denied = authorize(t, q, &headers(None), &plain, None)
            .unwrap_err()
            .into_response();
        assert!(denied.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }

    #[test]
    fn without_a_token_only_loopback_is_served() {
        let plain: Uri = "/".parse().unwrap();
        let peer = |ip: std::net::IpAddr| ConnectInfo(SocketAddr::new(ip, 4000));
        let h = TokenSources::Header;
        let local = peer(Ipv4Addr::LOCALHOST.into());
        let local6 = peer(Ipv6Addr::LOCALHOST.into());
        let remote = peer(Ipv4Addr::new(10, 0, 0, 7).into());
        assert_eq!(
            status(authorize(None, h, &headers(None), &plain, Some(&local))),
            200
        );
        assert_eq!(
            status(authorize(None, h, &headers(None), &plain, Some(&local6))),
            200
        );
        assert_eq!(
            status(authorize(None, h, &headers(None), &plain, Some(&remote))),
            403
        );
        assert_eq!(
            status(authorize(None, h, &headers(None), &plain, None)),
            403
        );
    }

    #[test]
    fn an_empty_or_blank_token_authorises_nobody() {
        let plain: Uri = "/admin/self-healing".parse().unwrap();
        let empty_query: Uri = "/admin/self-healing?token=".parse().unwrap();
        let blank_query: Uri = "/admin/self-healing?token=%20%20".parse().unwrap();
        let local = ConnectInfo(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 4000));
        let q = TokenSources::HeaderOrQuery;
        for configured in ["", " ", "  \t"] {
            let t = Some(configured);
            for auth in [None, Some("Bearer "), Some("Bearer  "), Some("Bearer x")] {
                for uri in [&plain, &empty_query, &blank_query] {
                    for peer in [None, Some(&local)] {
                        assert_eq!(
                            status(authorize(t, q, &headers(auth), uri, peer)),
                            401,
                            "configured {configured:?}, auth {auth:?}, uri {uri}"
                        );
                    }
                }
            }
        }
        assert!(!token_is_usable(""));
        assert!(!token_is_usable(" \t\n"));
        assert!(token_is_usable("s3cret"));
    }

    #[test]
    fn without_a_token_requests_through_a_proxy_are_refused() {
        let plain: Uri = "/".parse().unwrap();
        let local = ConnectInfo(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 4000));
        let h = TokenSources::Header;
        for (name, value) in [
            ("forwarded", "for=203.0.113.9"),
            ("x-forwarded-for", "203.0.113.9"),
            ("X-Real-IP", "203.0.113.9"),
        ] {
            let mut hs = headers(None);
            hs.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            assert_eq!(
                status(authorize(None, h, &hs, &plain, Some(&local))),
                403,
                "{name}"
            );
            // A token still decides when one is configured, proxy or not.
            hs.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
            assert_eq!(
                status(authorize(Some("s3cret"), h, &hs, &plain, Some(&local))),
                200,
                "{name} with a token"
            );
        }
        assert_eq!(
            status(authorize(None, h, &headers(None), &plain, Some(&local))),
            200
        );
    }

    #[test]
    fn comparison_needs_equal_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
