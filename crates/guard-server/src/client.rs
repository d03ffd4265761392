//! A minimal HTTP/1.1 client over hyper (already in the tree through axum) for the drift
//! webhook and `ingest-guard stats`: one request per connection, `http://` only, a deadline
//! on the whole exchange and a cap on the response body.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Largest response body read.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL does not parse, is not `http://` or has no host.
    #[error("{url:?}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No TCP connection.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The exchange failed (handshake, request, or reading the body).
    #[error("{method} {url}: {why}")]
    Exchange {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The cause.
        why: String,
    },
    /// No answer within the deadline.
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
}

/// Send one request (a JSON body when `body` is given) and return the status and body.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
    tokio::time::timeout(timeout, exchange(method, url, body))
        .await
        .map_err(|_| ClientError::Timeout {
            method: method.to_owned(),
            url: url.to_owned(),
            timeout,
        })?
}

async fn exchange(method: &str, url: &str, body: Option<Vec<u8>>) -> Result<(u16, Vec<u8>), ClientError> {
    let bad = |why| ClientError::Url {
        url: url.to_owned(),
        why,
    };
    let failed = |why: String| ClientError::Exchange {
        method: method.to_owned(),
        url: url.to_owned(),
        why,
    };
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// URLs are supported"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|source| ClientError::Connect {
            addr: format!("{host}:{port}"),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(format!("handshake: {e}")))?;
    let conn = tokio::spawn(conn);
    let authority = uri.authority().map_or(host.to_owned(), |a| a.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("ingest-guard/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| failed(format!("building the request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| failed(format!("sending: {e}")))?;
    let status = resp.status().as_u16();
    let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| failed(format!("reading the response: {e}")))?
        .to_bytes();
    conn.abort();
    Ok((status, bytes.to_vec()))
}
