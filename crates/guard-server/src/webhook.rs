//! Ordered webhook delivery off the record path: payloads wait in a bounded queue and each
//! is retried with doubling back-off until the receiver takes it (2xx). Senders only ever
//! `try_send`, so a slow or dead receiver never blocks them; what does not fit is counted
//! and dropped, oldest first.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// Longest back-off between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a webhook is reached.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `http://` URL the payloads are POSTed to (JSON).
    pub url: String,
    /// Most payloads waiting; older ones are dropped beyond it.
    pub capacity: usize,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// First back-off after a failed attempt (doubles up to 30 s).
    pub backoff: Duration,
}

impl Webhook {
    /// Start delivering on the current tokio runtime; returns the queue's sender.
    pub fn spawn(self) -> mpsc::Sender<Vec<u8>> {
        let capacity = self.capacity.max(1);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(capacity);
        tokio::spawn(deliver(self, rx));
        tx
    }
}

/// Deliver payloads in order, retrying each with doubling back-off; keep at most
/// `capacity` waiting (oldest dropped and counted).
async fn deliver(hook: Webhook, mut rx: mpsc::Receiver<Vec<u8>>) {
    let capacity = hook.capacity.max(1);
    let backoff = hook.backoff.max(Duration::from_millis(1));
    let url = hook.url;
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    let mut wait = backoff;
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(b) => queue.push_back(b),
                None => return,
            }
        }
        while let Ok(b) = rx.try_recv() {
            queue.push_back(b);
        }
        while queue.len() > capacity {
            queue.pop_front();
            metrics::counter!("guard_stats_webhook_dropped_total").increment(1);
        }
        metrics::gauge!("guard_stats_webhook_queue").set(queue.len() as f64);
        let Some(body) = queue.front() else { continue };
        match crate::client::request("POST", &url, Some(body.clone()), hook.timeout).await {
            Ok((status, _)) if (200..300).contains(&status) => {
                queue.pop_front();
                wait = backoff;
                metrics::counter!("guard_stats_events_sent_total", "to" => "webhook").increment(1);
            }
            other => {
                let why = match other {
                    Ok((status, _)) => format!("status {status}"),
                    Err(e) => e.to_string(),
                };
                warn!(%url, why, retry_in = ?wait, queued = queue.len(), "webhook delivery failed");
                metrics::counter!("guard_stats_events_failed_total", "to" => "webhook").increment(1);
                // Keep accepting new payloads while backing off.
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        b = rx.recv() => match b {
                            Some(b) => queue.push_back(b),
                            None => break,
                        },
                    }
                }
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
}
