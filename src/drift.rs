//! Drift monitoring in the running guard. Per topic with a baseline, the numeric features of
//! passing records fill a window of the baseline's calibrated size; each full window is compared
//! with the baseline (guard-stats), exported as gauges per feature, and turned into alarms that
//! need two firing windows to rise and three quiet ones to clear.
//!
//! Windows are per judge worker (one by default); with several workers each sees its shard of
//! partitions. Memory is the baseline's bins per feature, whatever the traffic.

use anyhow::Context;
use guard_stats::{compare, firing_calibrated, AlarmPolicy, AlarmState, Baseline, NumericProfile, Transition};
use guard_validate::DomainSchema;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// One topic's drift monitor.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    topic: Arc<str>,
    baseline: Arc<Baseline>,
    window: Vec<NumericProfile>,
    in_window: usize,
    states: Vec<AlarmState>,
    policy: AlarmPolicy,
    buf: Vec<f64>,
}

impl DriftMonitor {
    /// Load a baseline for `topic` and check it belongs to `schema` (same id, same features in
    /// the same order); a mismatch names both.
    pub fn load(topic: &str, path: &Path, schema: &DomainSchema) -> anyhow::Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("reading baseline {}", path.display()))?;
        let baseline: Baseline = serde_json::from_slice(&text)
            .with_context(|| format!("baseline {} is not a baseline file", path.display()))?;
        anyhow::ensure!(
            baseline.format == guard_stats::BASELINE_FORMAT,
            "baseline {} has format {}, this guard reads {}",
            path.display(),
            baseline.format,
            guard_stats::BASELINE_FORMAT
        );
        anyhow::ensure!(
            baseline.schema_id == schema.id().as_ref(),
            "baseline {} was built for schema {:?}, the route's schema is {:?}",
            path.display(),
            baseline.schema_id,
            schema.id()
        );
        let want: Vec<&str> = schema.guard().numeric.iter().map(|f| f.name.as_str()).collect();
        let have: Vec<&str> = baseline.features.iter().map(|f| f.name.as_str()).collect();
        anyhow::ensure!(
            want == have,
            "baseline {} has features {have:?}, schema {} has {want:?}",
            path.display(),
            schema.id()
        );
        anyhow::ensure!(
            baseline.window >= 2,
            "baseline {} has window {}",
            path.display(),
            baseline.window
        );
        Ok(Self::new(topic, Arc::new(baseline)))
    }

    fn new(topic: &str, baseline: Arc<Baseline>) -> Self {
        let window = baseline.features.iter().map(|f| NumericProfile::new(&f.bins)).collect();
        let states = vec![AlarmState::default(); baseline.features.len()];
        Self {
            topic: Arc::from(topic),
            baseline,
            window,
            in_window: 0,
            states,
            policy: AlarmPolicy::default(),
            buf: Vec::new(),
        }
    }

    /// Add one passing record.
    #[inline]
    pub fn observe(&mut self, schema: &DomainSchema, value: &Value) {
        schema.numeric_features_into(value, &mut self.buf);
        for ((w, f), x) in self.window.iter_mut().zip(&self.baseline.features).zip(&self.buf) {
            w.push(&f.bins, *x);
        }
        self.in_window += 1;
        if self.in_window >= self.baseline.window {
            self.close_window();
        }
    }

    fn close_window(&mut self) {
        let topic = self.topic.to_string();
        let mut drifts = Vec::with_capacity(self.window.len());
        for (w, f) in self.window.iter().zip(&self.baseline.features) {
            match compare(&f.bins, &f.profile, w) {
                Ok(d) => drifts.push(d),
                // A feature absent in the whole window: nothing to compare, it cannot fire.
                Err(_) => drifts.push(guard_stats::FeatureDrift::none()),
            }
        }
        let calibration: Vec<_> = self.baseline.features.iter().map(|f| f.calibration).collect();
        let fired = firing_calibrated(&self.policy, &drifts, &calibration);
        tracing::debug!(
            topic = %self.topic,
            firing = ?fired.iter().map(|f| u8::from(f.ks) * 4 + u8::from(f.psi) * 2 + u8::from(f.variance)).collect::<Vec<_>>(),
            var_ratio = ?drifts.iter().map(|d| (d.var_ratio * 100.0).round() / 100.0).collect::<Vec<_>>(),
            var_p = ?drifts.iter().map(|d| d.var_p).collect::<Vec<_>>(),
            "drift window evaluated"
        );
        for (i, f) in self.baseline.features.iter().enumerate() {
            let (d, fire) = (&drifts[i], fired[i]);
            let labels = [("topic", topic.clone()), ("feature", f.name.clone())];
            metrics::gauge!("guard_stats_ks", &labels).set(d.ks);
            metrics::gauge!("guard_stats_psi", &labels).set(d.psi);
            metrics::gauge!("guard_stats_js", &labels).set(d.js);
            metrics::gauge!("guard_stats_variance_ratio", &labels).set(d.var_ratio);
            match self.states[i].update(&self.policy, fire.any()) {
                Transition::Raised => {
                    warn!(topic, feature = %f.name, ks = d.ks, psi = d.psi, variance_ratio = d.var_ratio, ?fire, "drift alarm raised");
                    metrics::counter!("guard_stats_alarms_raised_total", "topic" => topic.clone()).increment(1);
                }
                Transition::Cleared => info!(topic, feature = %f.name, "drift alarm cleared"),
                Transition::None => {}
            }
            metrics::gauge!("guard_stats_alarm", &labels).set(if self.states[i].raised { 1.0 } else { 0.0 });
        }
        metrics::counter!("guard_stats_windows_total", "topic" => topic).increment(1);
        self.window.iter_mut().for_each(NumericProfile::clear);
        self.in_window = 0;
    }
}
