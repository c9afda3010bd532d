//! The small HTTP client the reporter shares between the LLM client and the webhook sink
//! (feature `llm`; `https://` with feature `llm-tls`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

#[cfg(feature = "llm-tls")]
type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
#[cfg(not(feature = "llm-tls"))]
type Connector = hyper_util::client::legacy::connect::HttpConnector;

/// The most of a response body that is read (1 MiB); a longer one is
/// [`HttpError::TooLarge`].
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why an HTTP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpError {
    InvalidUrl(String),
    Connect(String),
    Timeout(Duration),
    Io(String),
    /// The response body was longer than this many bytes; reading stopped there.
    TooLarge(usize),
}

/// A POST client with one connection pool.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
}

impl HttpClient {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "llm-tls")]
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        #[cfg(not(feature = "llm-tls"))]
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// POSTs `body` as JSON; returns the status and the whole response body, which may be at
    /// most [`MAX_RESPONSE_BYTES`] long ([`HttpError::TooLarge`] otherwise). `timeout` covers
    /// connecting, sending and reading. A connect error is retried once, nothing else is.
    pub(crate) async fn post_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), HttpError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| HttpError::InvalidUrl(format!("{url}: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            #[cfg(feature = "llm-tls")]
            Some("https") => {}
            _ => {
                return Err(HttpError::InvalidUrl(format!(
                    "{url}: only http{} URLs are supported",
                    if cfg!(feature = "llm-tls") {
                        "(s)"
                    } else {
                        " (enable feature llm-tls for https)"
                    }
                )))
            }
        }
        let body = Bytes::from(body);
        let attempt = |body: Bytes| {
            let mut req = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::USER_AGENT,
                    concat!("poolguard/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(key) = bearer {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
            }
            let req = req.body(Full::new(body));
            let client = self.client.clone();
            async move {
                let req = req.map_err(|e| HttpError::InvalidUrl(e.to_string()))?;
                let resp = client.request(req).await.map_err(|e| {
                    if e.is_connect() {
                        HttpError::Connect(e.to_string())
                    } else {
                        HttpError::Io(e.to_string())
                    }
                })?;
                let status = resp.status().as_u16();
                let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.is::<LengthLimitError>() {
                            HttpError::TooLarge(MAX_RESPONSE_BYTES)
                        } else {
                            HttpError::Io(e.to_string())
                        }
                    })?
                    .to_bytes();
                Ok((status, bytes))
            }
        };
        let run = async {
            match attempt(body.clone()).await {
                Err(HttpError::Connect(_)) => attempt(body).await,
                other => other,
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
    }
}
