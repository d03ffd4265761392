//! The drift hub's compacted side topics, off the record path: partition views (keyed
//! `group/topic/partition`, read back for `GET /api/stats?scope=group`) and source blocks and
//! their releases (keyed `topic/source`, read back by every instance so the group blocks and
//! releases the same sources).

use crate::keyed::{ensure_side_topics, follow_compacted, publish_loop, KeyedPublisher};
use crate::KafkaGuardError;
use guard_config::Config;
use guard_core::SideTopics;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Create the events and profiles topics when missing (profiles compacted).
pub async fn ensure_topics(cfg: &Config) {
    let d = &cfg.drift;
    ensure_side_topics(cfg, d.events_topic.as_deref(), d.profiles_topic.as_deref()).await;
    ensure_side_topics(cfg, None, cfg.flood.blocks_topic.as_deref()).await;
}

/// Publish changed partition views to the profiles topic every `drift.profiles_interval_ms`,
/// and source blocks and releases to the blocks topic every 200 ms (what fails is sent again);
/// once more when `stop` is set.
pub async fn publish_side(cfg: Config, hub: Arc<dyn SideTopics>, stop: Arc<AtomicBool>) {
    let publisher = |t: &Option<String>| {
        KeyedPublisher::new(&cfg, t.as_deref()?)
            .map_err(|e| warn!(error = %e, "cannot create a side topic producer"))
            .ok()
    };
    let (views, blocks, back) = (Arc::clone(&hub), Arc::clone(&hub), hub);
    let profiles = publisher(&cfg.drift.profiles_topic).map(|p| {
        let interval = Duration::from_millis(cfg.drift.profiles_interval_ms.max(100));
        publish_loop(
            p,
            interval,
            Arc::clone(&stop),
            move || views.take_views(),
            |_| metrics::counter!("guard_stats_profiles_failed_total").increment(1),
        )
    });
    let blocks = publisher(&cfg.flood.blocks_topic).map(|p| {
        let failed = move |docs| back.put_back_blocks(docs);
        publish_loop(
            p,
            Duration::from_millis(200),
            Arc::clone(&stop),
            move || blocks.take_blocks(),
            failed,
        )
    });
    tokio::join!(
        async {
            if let Some(f) = profiles {
                f.await
            }
        },
        async {
            if let Some(f) = blocks {
                f.await
            }
        }
    );
}

/// Read the blocks and profiles topics from the beginning into the hub until `stop` (own
/// threads).
pub fn read_side(cfg: &Config, hub: Arc<dyn SideTopics>, stop: Arc<AtomicBool>) -> Result<(), KafkaGuardError> {
    if let Some(t) = &cfg.flood.blocks_topic {
        let blocks = Arc::clone(&hub);
        follow_compacted(cfg, t, "blocks-reader", Arc::clone(&stop), move |key, payload| {
            blocks.apply_block(key, payload)
        })?;
    }
    if let Some(t) = &cfg.drift.profiles_topic {
        follow_compacted(cfg, t, "profiles-reader", stop, move |key, payload| {
            hub.put_view(key, payload)
        })?;
    }
    Ok(())
}
