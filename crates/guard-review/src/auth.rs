//! Who is asking: HTTP basic auth (scripts) or a sign-in session cookie (the dashboard), checked
//! against the configured reviewers' password hashes; and the anti-CSRF token every action
//! must carry in the `x-csrf-token` header.
//!
//! Passwords are compared as SHA-256 digests, so the comparison time says nothing about the
//! secret. A session cookie is `HttpOnly; SameSite=Strict`; its CSRF token is random. A basic-
//! auth client's CSRF token is derived from the server's random secret and its name, and is
//! handed out by `GET /api/review/session`; a cross-site form cannot read it or set the header.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most sign-in sessions kept; the oldest goes first when full.
const MAX_SESSIONS: usize = 10_000;

/// A configured reviewer: name and the SHA-256 of the password.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Name.
    pub name: String,
    /// SHA-256 of the password.
    pub password_sha256: [u8; 32],
}

impl Credential {
    /// From the config's hex digest.
    pub fn from_hex(name: &str, hex: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        if hex.len() != 64 {
            return None;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self {
            name: name.to_owned(),
            password_sha256: out,
        })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Reviewer name.
    pub name: String,
    /// The CSRF token its actions must carry.
    pub csrf: String,
    /// Signed in by session cookie (else basic auth).
    pub session: Option<String>,
}

struct Session {
    name: String,
    csrf: String,
    expires: Instant,
    created: Instant,
}

/// Credentials and sessions.
pub struct Auth {
    reviewers: Vec<Credential>,
    secret: [u8; 32],
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("reviewers", &self.reviewers.iter().map(|r| &r.name).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    // getrandom fails only without an OS entropy source; then fall back to a digest of the
    // clock and address, still unguessable enough to be unique but logged.
    if getrandom::fill(&mut b).is_err() {
        tracing::error!("no OS randomness: session tokens derive from the clock");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = Sha256::digest(format!("{t}:{:p}", &b)).into();
    }
    hex(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Cookie name of sign-in sessions.
pub const COOKIE: &str = "guard_review";

impl Auth {
    /// Reviewers and the session lifetime.
    pub fn new(reviewers: Vec<Credential>, ttl: Duration) -> Self {
        let mut secret = [0u8; 32];
        if getrandom::fill(&mut secret).is_err() {
            secret = Sha256::digest(random_hex()).into();
        }
        Self {
            reviewers,
            secret,
            ttl,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any reviewer is configured.
    pub fn configured(&self) -> bool {
        !self.reviewers.is_empty()
    }

    fn check_password(&self, name: &str, password: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let mut ok = false;
        for r in &self.reviewers {
            // Visit every reviewer; compare digests (no early exit on the secret).
            let same = r
                .password_sha256
                .iter()
                .zip(&digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            ok |= same && r.name == name;
        }
        ok
    }

    fn basic_csrf(&self, name: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(b"csrf:");
        h.update(name.as_bytes());
        hex(&h.finalize())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sign in: a new session id and its CSRF token, or `None` for wrong credentials.
    pub fn login(&self, name: &str, password: &str) -> Option<Identity> {
        if !self.check_password(name, password) {
            return None;
        }
        let now = Instant::now();
        let mut s = self.lock();
        s.retain(|_, v| v.expires > now);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s.iter().min_by_key(|(_, v)| v.created).map(|(k, _)| k.clone()) {
                s.remove(&oldest);
            }
        }
        let id = random_hex();
        let csrf = random_hex();
        s.insert(
            id.clone(),
            Session {
                name: name.to_owned(),
                csrf: csrf.clone(),
                expires: now + self.ttl,
                created: now,
            },
        );
        Some(Identity {
            name: name.to_owned(),
            csrf,
            session: Some(id),
        })
    }

    /// Sign out.
    pub fn logout(&self, session: &str) {
        self.lock().remove(session);
    }

    /// Identify a request from its `authorization` and `cookie` headers.
    pub fn identify(&self, authorization: Option<&str>, cookie: Option<&str>) -> Option<Identity> {
        if let Some(b64) = authorization.and_then(|a| a.strip_prefix("Basic ")) {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (name, password) = text.split_once(':')?;
            return self.check_password(name, password).then(|| Identity {
                name: name.to_owned(),
                csrf: self.basic_csrf(name),
                session: None,
            });
        }
        let id = cookie?
            .split(';')
            .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))?;
        let now = Instant::now();
        let s = self.lock();
        let v = s.get(id).filter(|v| v.expires > now)?;
        Some(Identity {
            name: v.name.clone(),
            csrf: v.csrf.clone(),
            session: Some(id.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::Engine as _;

    fn auth() -> Auth {
        // sha256("demo")
        let c = Credential::from_hex(
            "alice",
            "2a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea",
        )
        .unwrap();
        Auth::new(vec![c], Duration::from_secs(60))
    }

    #[test]
    fn basic_and_session_identify_and_wrong_ones_do_not() {
        let a = auth();
        let basic = |u: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(u));
        let who = a.identify(Some(&basic("alice:demo")), None).unwrap();
        assert_eq!(who.name, "alice");
        assert_eq!(who.csrf, a.identify(Some(&basic("alice:demo")), None).unwrap().csrf);
        assert!(a.identify(Some(&basic("alice:wrong")), None).is_none());
        assert!(a.identify(Some(&basic("bob:demo")), None).is_none());
        assert!(a.identify(Some("Basic %%%"), None).is_none());
        assert!(a.identify(None, None).is_none());
        assert!(a.login("alice", "nope").is_none());
        let s = a.login("alice", "demo").unwrap();
        let sid = s.session.clone().unwrap();
        let cookie = format!("other=1; {COOKIE}={sid}");
        assert_eq!(a.identify(None, Some(&cookie)).unwrap().csrf, s.csrf);
        assert!(a.identify(None, Some(&format!("{COOKIE}=forged"))).is_none());
        a.logout(&sid);
        assert!(a.identify(None, Some(&cookie)).is_none());
    }
}
