//! Quarantine files in S3-compatible object storage (`quarantine.url = "s3://bucket/prefix"`),
//! through the Arrow ecosystem's `object_store` crate.
//!
//! The same rules as the local folder hold: a file appears whole or not at all (one PUT), and
//! a file is never replaced: every write is a conditional put (`If-None-Match: *`), so two
//! instances, or a replay after a crash, can never overwrite a file; the second writer gets
//! [`QuarantineError::Exists`] and the caller writes beside it or finds its own bytes there.
//!
//! The store keeps its own small runtime: the [`QuarantineStore`] trait is blocking (callers
//! use it from blocking sections), and each call runs on that runtime and waits for the result,
//! so it works from any thread.

use crate::store::{parse_file_name, QuarantineStore};
use crate::QuarantineError;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Where and how to reach the bucket.
#[derive(Debug, Clone, Default)]
pub struct ObjectSettings {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// Endpoint of an S3-compatible service (`http://minio:9000`); unset: AWS (or
    /// `AWS_ENDPOINT` from the environment).
    pub endpoint: Option<String>,
    /// Region; unset: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Allow `http://` endpoints (tests, a service inside the cluster network).
    pub allow_http: bool,
    /// Longest one request may take, retries included.
    pub request_timeout: Duration,
    /// Access key id and secret; unset (the guard's case): from the environment.
    pub credentials: Option<(String, String)>,
}

/// Quarantine files under a prefix of an S3-compatible bucket.
pub struct ObjectStoreQuarantine {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectStoreQuarantine {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime's tasks;
        // background shutdown is (in-flight requests are abandoned; nothing is committed
        // for them).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for ObjectStoreQuarantine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreQuarantine").field("url", &self.url).finish()
    }
}

impl ObjectStoreQuarantine {
    /// Complete quarantine files (relative names and sizes) under `sub` (relative), sorted.
    fn list_under(&self, sub: &str) -> Result<Vec<(String, u64)>, QuarantineError> {
        let root = match (self.prefix.is_empty(), sub.is_empty()) {
            (true, true) => None,
            (false, true) => Some(ObjectPath::parse(&self.prefix).map_err(|e| QuarantineError::Format(e.to_string()))?),
            _ => Some(self.key(sub.trim_end_matches('/'))?),
        };
        let store = Arc::clone(&self.store);
        let listed = self.run(async move {
            let mut s = store.list(root.as_ref());
            let mut out = Vec::new();
            while let Some(m) = s.next().await {
                let m = m?;
                out.push((m.location.to_string(), m.size));
            }
            Ok::<_, object_store::Error>(out)
        })?;
        let listed = listed.map_err(|e| object_error(&self.url, e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out: Vec<(String, u64)> = listed
            .into_iter()
            .filter_map(|(k, size)| Some((k.strip_prefix(&strip)?.to_owned(), size)))
            .filter(|(k, _)| parse_file_name(k).is_some())
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Split `s3://bucket/prefix/` into the bucket and the prefix (without slashes at either end).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?}: only s3://bucket[/prefix] URLs are supported"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{url:?}: no bucket"));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        return Err(format!("{url:?}: the prefix must be plain path segments"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

impl ObjectStoreQuarantine {
    /// Connect (lazily: nothing is sent until the first call). Credentials come from the
    /// environment as the AWS SDKs read them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, web identity / IRSA, container credentials).
    pub fn open(settings: &ObjectSettings) -> Result<Self, QuarantineError> {
        let (bucket, prefix) = parse_url(&settings.url).map_err(QuarantineError::Format)?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(settings.request_timeout)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(settings.allow_http),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: settings.request_timeout,
                ..RetryConfig::default()
            });
        if let Some(e) = &settings.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &settings.region {
            b = b.with_region(r);
        } else if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
            b = b.with_region("us-east-1");
        }
        if settings.allow_http {
            b = b.with_allow_http(true);
        }
        if let Some((id, secret)) = &settings.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = b.build().map_err(|e| object_error(&settings.url, e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quarantine-s3")
            .enable_all()
            .build()
            .map_err(|e| QuarantineError::io(&settings.url, e))?;
        Ok(Self {
            store: Arc::new(store),
            prefix,
            url: settings.url.clone(),
            rt: Some(rt),
        })
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, name: &str) -> Result<ObjectPath, QuarantineError> {
        let full = if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|e| QuarantineError::Format(format!("{full}: {e}")))
    }

    /// Run `fut` on the store's runtime and wait for it, from any thread.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T, QuarantineError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if let Some(rt) = &self.rt {
            rt.spawn(async move {
                let _ = tx.send(fut.await);
            });
        }
        rx.recv()
            .map_err(|_| QuarantineError::io(&self.url, std::io::Error::other("object store runtime stopped")))
    }
}

fn object_error(url: &str, e: object_store::Error) -> QuarantineError {
    QuarantineError::io(url, std::io::Error::other(e.to_string()))
}

impl QuarantineStore for ObjectStoreQuarantine {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), QuarantineError> {
        let key = self.key(name)?;
        let store = Arc::clone(&self.store);
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.run(async move { store.put_opts(&key, payload, opts).await })? {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Err(QuarantineError::Exists(name.to_owned()))
            }
            Err(e) => Err(object_error(&format!("{}/{name}", self.url), e)),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, QuarantineError> {
        self.get_bytes(name).map(|b| b.to_vec())
    }

    fn get_bytes(&self, name: &str) -> Result<Bytes, QuarantineError> {
        let key = self.key(name)?;
        let store = Arc::clone(&self.store);
        self.run(async move { store.get(&key).await?.bytes().await })?
            .map_err(|e| object_error(&format!("{}/{name}", self.url), e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, QuarantineError> {
        let under = format!("{}/", prefix.trim_end_matches('/'));
        Ok(self
            .list_under(prefix)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.strip_prefix(&under).is_some_and(|rest| !rest.contains('/')))
            .collect())
    }

    fn list_all(&self) -> Result<Vec<(String, u64)>, QuarantineError> {
        self.list_under("")
    }

    fn clean_partial(&self, _prefix: &str) -> Result<usize, QuarantineError> {
        // A PUT is atomic: object storage never shows part of a file.
        Ok(0)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_plain_prefix() {
        assert_eq!(parse_url("s3://b"), Ok(("b".into(), String::new())));
        assert_eq!(parse_url("s3://b/q/x/"), Ok(("b".into(), "q/x".into())));
        assert!(parse_url("gs://b").is_err());
        assert!(parse_url("s3:///x").is_err());
        assert!(parse_url("s3://b/../x").is_err());
    }
}
