//! Who may see the dashboard: a bearer token when one is configured, loopback peers otherwise.

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
/// With a token: [`Denied::Unauthorized`] unless the request presents it. Without a token:
/// [`Denied::Forbidden`] unless the peer (from `ConnectInfo<SocketAddr>`) is a loopback
/// address; a server started without connect info is refused too, naming the fix.
pub(crate) fn authorize(
    token: Option<&str>,
    sources: TokenSources,
    headers: &HeaderMap,
    uri: &Uri,
    peer: Option<&ConnectInfo<SocketAddr>>,
) -> Result<(), Denied> {
    match token {
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
    fn comparison_needs_equal_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
