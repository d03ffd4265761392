//! The window scan: poison that one record does not give away. A backdoor or a flood of
//! mislabelled records works by being many records of one class that share something, so
//! the scan judges a record together with the records around it.
//!
//! Per class, over a window of recent records of the route, on the label model's hidden
//! representation (its `hidden` output):
//!
//! 1. Whiten with the trusted rows' statistics of that class (the trainer's `scan` metadata:
//!    mean and a projection onto the top `dims` eigenvectors of the shrunk covariance divided
//!    by the square roots of their eigenvalues). A clean window then has a second-moment
//!    matrix near the identity, whose top eigenvalue stays near the Marchenko-Pastur edge
//!    `(1 + sqrt(dims / n))²`; records that share a direction away from the trusted class
//!    raise it (spectral signatures, Tran, Li, Madry 2018; whitening with clean statistics as
//!    in SPECTRE, Hayase et al. 2021).
//! 2. A class is suspect when its top eigenvalue is over `factor × edge` (the factor clean
//!    calibration windows reach) times the median ratio of the window's other classes (at
//!    least 1): a sorted or drifting stream moves every class's window away from the trusted
//!    statistics, a campaign moves the classes it targets. While the top eigenvalue is over
//!    `factor × edge`, take out the record with the largest projection on the top
//!    eigenvector.
//! 3. Fewer than `min_cluster` records taken out: no cluster, nothing flagged. Else one
//!    two-means step refines the split (records nearer the taken-out centroid than the rest's,
//!    along the line between them, join it). When at least `min_cluster` of the cluster are
//!    being judged (the campaign goes on now, not only in the context), the class window
//!    counts as poisoned: its cluster is flagged, and so is every other record of the class
//!    whose label score is over `doubt_threshold` (a lower bar than the per-record threshold:
//!    the window gave evidence). That bar is the class's own (`ScanClass::doubt_threshold`):
//!    the trainer sets it so that, at the calibration's confidence, at most 1 −
//!    `doubt_quantile` of the class's clean rows lie over it, which keeps one attacked
//!    class's clean rows over it within half the false-positive budget. When most of the
//!    cluster's judged records are over the bar, the campaign mislabels (a dirty-label
//!    backdoor), and a member whose label the model believes is more likely a clean record
//!    the split took in: members are then flagged only over the bar too. A campaign that
//!    keeps true labels (a clean-label backdoor) is flagged by the cluster alone.
//! 4. Fewer than `min_cluster` of the cluster judged: the per-record checks may have caught
//!    most of the campaign (its cluster is the context's quarantined records) and let a few
//!    milder records through, which are not members. Their labels are doubted, so the
//!    judged records of the class hold more over the bar than its clean records would: when
//!    at least that many over it among that many clean ones is less likely than
//!    [`EXCESS_ALPHA`] (binomial, at the bar's share 1 − `doubt_quantile`), the campaign
//!    counts as going on now and mislabelling, and the judged records over the bar are
//!    flagged ([`Excess`] in the explanation).
//!
//! Only the records being judged (the hold) can be flagged; the context (records released
//! before, and records of the route a per-record check quarantined) adds statistical power.
//! Everything here is bounded by the window's size.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The label model's scan statistics (`scan` in its metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanMeta {
    /// Graph output with the hidden representation, `[N, width]`.
    pub hidden_output: String,
    /// Whitened dimensions.
    pub dims: usize,
    /// Eigenvalue factor over the Marchenko-Pastur edge that counts as a cluster.
    pub factor: f64,
    /// Fewest records taken out that make a cluster.
    pub min_cluster: usize,
    /// Fewest records of a class in the window for it to be scanned.
    pub min_class_rows: usize,
    /// Label score above which a record of a poisoned class window is flagged too (the bar of
    /// a class whose statistics give none of its own).
    pub doubt_threshold: f64,
    /// The doubt bars' quantile (for review): at most 1 − this share of a class's clean
    /// calibration rows lie over its bar, at the calibration's confidence. The trainer sets it
    /// from the class count and the budget.
    #[serde(default)]
    pub doubt_quantile: Option<f64>,
    /// The factors clean calibration rows reached per class (for review).
    #[serde(default)]
    pub null_factors: Vec<f64>,
    /// Per class (as the label renders): trusted mean and whitening projection.
    pub classes: BTreeMap<String, ScanClass>,
}

impl ScanMeta {
    /// Width of the hidden representation (from the statistics).
    pub fn width(&self) -> Option<usize> {
        self.classes.values().next().map(|c| c.mean.len())
    }
}

/// One class's trusted statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanClass {
    /// Mean hidden representation, `width` values.
    pub mean: Vec<f32>,
    /// Whitening projection, `dims` rows of `width`.
    pub projection: Vec<Vec<f32>>,
    /// This class's doubt bar, from its clean calibration rows' label scores (pooled with
    /// the classes the model doubts alike: the trainer's empirical-Bayes bound): a class the
    /// model finds harder than the others has higher scores, and a bar shared by all classes
    /// would spend more of the budget when that class is attacked. Absent:
    /// [`ScanMeta::doubt_threshold`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doubt_threshold: Option<f64>,
}

/// One record of a scan window.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanItem {
    /// Index of its given label in the model's classes (`None`: not scanned).
    pub class: Option<usize>,
    /// Its hidden representation.
    pub hidden: Vec<f32>,
    /// Its label score (1 − p(given label)).
    pub label_score: f32,
}

/// Why the scan flagged a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanWhy {
    /// It is in the cluster.
    Cluster,
    /// Its class window is poisoned and the label model doubts its label.
    Doubt,
}

/// A flagged record's explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanFlag {
    /// The class (as the label renders).
    pub class: String,
    /// Records of the class in the window.
    pub class_rows: usize,
    /// The cluster's size.
    pub cluster: usize,
    /// Top eigenvalue over the edge before anything was taken out.
    pub eigen_ratio: f64,
    /// The factor that counts as a cluster.
    pub factor: f64,
    /// The median ratio of the window's other classes (at least 1): the factor applies over it.
    pub reference: f64,
    /// Why.
    pub why: ScanWhy,
    /// The record's label score (`null` when it is not a number).
    pub label_score: f64,
    /// The doubt bar: a record of a poisoned class window over it is flagged.
    pub doubt_threshold: f64,
    /// The bar's quantile of the class's clean calibration scores (when the metadata says).
    pub doubt_quantile: Option<f64>,
    /// Most of the cluster's judged records are over the doubt bar (a campaign that
    /// mislabels): a member is flagged only over the bar too.
    pub mislabelling: bool,
    /// Set when fewer than `min_cluster` of the cluster are held: the held records of the
    /// class hold more that the label model doubts than clean records would.
    pub excess: Option<Excess>,
}

/// The held records of a poisoned class window hold more doubted records than its clean
/// records would (a binomial tail at the bar's share, under [`EXCESS_ALPHA`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Excess {
    /// Held records of the class.
    pub held: usize,
    /// Of them, over the doubt bar.
    pub doubted: usize,
    /// Chance of at least that many over the bar among clean records.
    pub p_value: f64,
}

/// The significance under which doubted held records count as a campaign going on now
/// although fewer than `min_cluster` of them are in the cluster.
pub const EXCESS_ALPHA: f64 = 0.01;

/// P(X ≥ `over`) for X ~ Binomial(`n`, `share`); `None` when it is not defined.
fn excess_p(over: usize, n: usize, share: f64) -> Option<f64> {
    use statrs::distribution::{Binomial, DiscreteCDF};
    if over == 0 {
        return Some(1.0);
    }
    let b = Binomial::new(share, n as u64).ok()?;
    Some(b.sf(over as u64 - 1))
}

impl ScanFlag {
    /// One line for the quarantine reason.
    pub fn message(&self, window: usize) -> String {
        let excess = self.excess.map_or(String::new(), |e| {
            format!(
                "; {} of the class's {} held records are over the bar, more than its clean records would give (p = {:.1e})",
                e.doubted, e.held, e.p_value
            )
        });
        let reason = match self.why {
            ScanWhy::Cluster => format!(
                "in a cluster of {} of the {} records labelled {} in a window of {window}: top eigenvalue {:.2} x the clean edge (a cluster from {:.2} x the other classes' {:.2}){}",
                self.cluster,
                self.class_rows,
                self.class,
                self.eigen_ratio,
                self.factor,
                self.reference,
                if self.mislabelling {
                    format!(
                        "; the label model doubts its label, as it does most of the cluster's: label score {:.3} over the doubt bar {:.3}",
                        self.label_score, self.doubt_threshold
                    )
                } else {
                    String::new()
                }
            ),
            ScanWhy::Doubt => format!(
                "labelled {} in a window where that class holds a cluster of {} of {} records (eigenvalue {:.2} x the clean edge), and the label model doubts the label: label score {:.3} over the doubt bar {:.3}{}",
                self.class,
                self.cluster,
                self.class_rows,
                self.eigen_ratio,
                self.label_score,
                self.doubt_threshold,
                self.doubt_quantile
                    .map_or(String::new(), |q| format!(" (the {q} quantile of the class's clean records' scores, bounded at the calibration's confidence)"))
            ),
        };
        reason + &excess
    }
}

struct Whiten {
    mean: Vec<f32>,
    projection: Vec<Vec<f32>>,
    /// The class's doubt bar.
    doubt: f64,
}

/// The scan of one label model.
pub struct SpectralScan {
    classes: Vec<Option<Whiten>>,
    names: Vec<String>,
    dims: usize,
    factor: f64,
    min_cluster: usize,
    min_class_rows: usize,
    doubt_quantile: Option<f64>,
}

impl std::fmt::Debug for SpectralScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpectralScan")
            .field("classes", &self.names)
            .field("dims", &self.dims)
            .field("factor", &self.factor)
            .finish_non_exhaustive()
    }
}

impl SpectralScan {
    /// Check the metadata against the model's classes and hidden width.
    pub fn new(meta: &ScanMeta, classes: &[String], width: usize) -> Result<Self, String> {
        if meta.dims == 0 || !meta.factor.is_finite() || meta.factor <= 0.0 || !meta.doubt_threshold.is_finite() {
            return Err("scan: dims, factor and doubt_threshold must be positive numbers".into());
        }
        let mut dims = None;
        let mut out = Vec::with_capacity(classes.len());
        for c in classes {
            let Some(sc) = meta.classes.get(c) else {
                out.push(None);
                continue;
            };
            if sc.mean.len() != width || sc.projection.iter().any(|r| r.len() != width) || sc.projection.is_empty() {
                return Err(format!(
                    "scan: class {c}: statistics are not over the hidden width {width}"
                ));
            }
            if *dims.get_or_insert(sc.projection.len()) != sc.projection.len() {
                return Err("scan: classes have different numbers of dimensions".into());
            }
            let doubt = match sc.doubt_threshold {
                Some(d) if !d.is_finite() => {
                    return Err(format!("scan: class {c}: the doubt threshold must be a number"));
                }
                Some(d) => d,
                None => meta.doubt_threshold,
            };
            out.push(Some(Whiten {
                mean: sc.mean.clone(),
                projection: sc.projection.clone(),
                doubt,
            }));
        }
        Ok(Self {
            classes: out,
            names: classes.to_vec(),
            dims: dims.unwrap_or(meta.dims),
            factor: meta.factor,
            min_cluster: meta.min_cluster.max(2),
            min_class_rows: meta.min_class_rows.max(meta.dims + 2),
            doubt_quantile: meta.doubt_quantile,
        })
    }

    /// Judge a window: `items` in stream order, of which only those with `judge[i]` can be
    /// flagged (the rest is context).
    pub fn scan(&self, items: &[ScanItem], judge: &[bool]) -> Vec<Option<ScanFlag>> {
        let mut out = vec![None; items.len()];
        // Whether record `i` is being judged (held), not context.
        let held = |i: usize| judge.get(i).copied().unwrap_or(false);
        let mut windows = Vec::new();
        for (c, w) in self.classes.iter().enumerate() {
            let Some(w) = w else { continue };
            let idx: Vec<usize> = (0..items.len()).filter(|i| items[*i].class == Some(c)).collect();
            if idx.len() < self.min_class_rows {
                continue;
            }
            let z: Vec<Vec<f64>> = idx.iter().map(|i| w.apply(&items[*i].hidden)).collect();
            let sum = self.moment_sum(&z);
            let ratio = self.first_ratio(&sum, z.len());
            windows.push((c, idx, z, sum, ratio));
        }
        for (pos, (c, idx, z, sum, first)) in windows.iter().enumerate() {
            let c = *c;
            let bar = self.classes[c].as_ref().map_or(f64::INFINITY, |w| w.doubt);
            if !idx.iter().any(|i| held(*i)) {
                continue;
            }
            // What the window does to every class is not a campaign against one: the bar
            // rises with the other classes' median ratio (a sorted or drifting stream).
            let mut others: Vec<f64> = windows
                .iter()
                .enumerate()
                .filter(|(q, _)| *q != pos)
                .map(|(_, w)| w.4)
                .collect();
            others.sort_by(f64::total_cmp);
            let reference = others.get(others.len() / 2).map_or(1.0, |m| m.max(1.0));
            if first.partial_cmp(&(self.factor * reference)) != Some(std::cmp::Ordering::Greater) {
                continue;
            }
            let Some((cluster, ratio)) = self.cluster(z, sum.clone()) else {
                continue;
            };
            let size = cluster.iter().filter(|x| **x).count();
            // The campaign must be going on among the judged records, not only in the
            // context (records already released or already quarantined).
            let judged_members = idx.iter().zip(&cluster).filter(|(i, m)| **m && held(**i)).count();
            let doubted = |i: usize| f64::from(items[i].label_score) > bar || items[i].label_score.is_nan();
            // Fewer members among the judged records: the campaign may still go on now when
            // the per-record checks catch most of it and its few escapees are held. Their
            // labels are doubted, so the judged records of the class hold more records over
            // the bar than its clean records would (at most 1 − `doubt_quantile` of them).
            let excess = if judged_members < self.min_cluster {
                let judged: Vec<usize> = idx.iter().copied().filter(|i| held(*i)).collect();
                let over = judged.iter().filter(|i| doubted(**i)).count();
                match self.doubt_quantile.and_then(|q| excess_p(over, judged.len(), 1.0 - q)) {
                    Some(p) if p < EXCESS_ALPHA => Some(Excess {
                        held: judged.len(),
                        doubted: over,
                        p_value: p,
                    }),
                    _ => continue,
                }
            } else {
                None
            };
            // A campaign that mislabels (most of its judged members over the doubt bar): a
            // member whose label the model believes is more likely a clean record of the
            // class that the split took in than poison, so members need the doubt too. A
            // campaign whose records keep their true label (a clean-label backdoor) is found
            // by the cluster alone.
            let doubted_members = idx
                .iter()
                .zip(&cluster)
                .filter(|(i, m)| **m && held(**i) && doubted(**i))
                .count();
            let mislabelling = excess.is_some() || 2 * doubted_members > judged_members;
            for (k, i) in idx.iter().enumerate() {
                if !held(*i) {
                    continue;
                }
                let why = if cluster[k] && (!mislabelling || doubted(*i)) {
                    ScanWhy::Cluster
                } else if doubted(*i) {
                    ScanWhy::Doubt
                } else {
                    continue;
                };
                out[*i] = Some(ScanFlag {
                    class: self.names[c].clone(),
                    class_rows: idx.len(),
                    cluster: size,
                    eigen_ratio: ratio,
                    factor: self.factor,
                    reference,
                    why,
                    label_score: f64::from(items[*i].label_score),
                    doubt_threshold: bar,
                    doubt_quantile: self.doubt_quantile,
                    mislabelling,
                    excess,
                });
            }
        }
        out
    }

    /// The sum of a class window's whitened outer products (`dims × dims`).
    fn moment_sum(&self, z: &[Vec<f64>]) -> Vec<f64> {
        let mut sum = vec![0.0; self.dims * self.dims];
        for r in z {
            add_outer(&mut sum, r, 1.0);
        }
        sum
    }

    /// Top eigenvalue of the second moment of `n` records (their [`Self::moment_sum`]) over
    /// the Marchenko-Pastur edge.
    fn first_ratio(&self, sum: &[f64], n: usize) -> f64 {
        let edge = (1.0 + (self.dims as f64 / n as f64).sqrt()).powi(2);
        let s: Vec<f64> = sum.iter().map(|x| x / n as f64).collect();
        top_eigen(&s, self.dims).0 / edge
    }

    /// The cluster of one class window (whitened rows and their [`Self::moment_sum`]), and
    /// the first eigenvalue ratio; `None` when there is none.
    fn cluster(&self, z: &[Vec<f64>], mut sum: Vec<f64>) -> Option<(Vec<bool>, f64)> {
        let n = z.len();
        let k = self.dims;
        let edge = (1.0 + (k as f64 / n as f64).sqrt()).powi(2);
        let mut kept = vec![true; n];
        let mut left = n;
        let mut first = None;
        while left > 10 {
            let s: Vec<f64> = sum.iter().map(|x| x / left as f64).collect();
            let (lambda, v) = top_eigen(&s, k);
            let ratio = lambda / edge;
            first.get_or_insert(ratio);
            // A NaN ratio (a NaN in a representation) is no evidence: stop.
            if ratio.partial_cmp(&self.factor) != Some(std::cmp::Ordering::Greater) {
                break;
            }
            let worst = (0..n)
                .filter(|i| kept[*i])
                .max_by(|a, b| proj2(&z[*a], &v).total_cmp(&proj2(&z[*b], &v)))?;
            kept[worst] = false;
            add_outer(&mut sum, &z[worst], -1.0);
            left -= 1;
        }
        let ratio = first.unwrap_or(0.0);
        let mut taken: Vec<bool> = kept.iter().map(|k| !k).collect();
        if taken.iter().filter(|x| **x).count() < self.min_cluster {
            return None;
        }
        // One two-means step along the line between the two centroids.
        let centroid = |pick: bool, taken: &[bool]| -> Vec<f64> {
            let mut c = vec![0.0; k];
            let mut m = 0.0_f64;
            for (r, t) in z.iter().zip(taken) {
                if *t == pick {
                    c.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                    m += 1.0;
                }
            }
            c.iter_mut().for_each(|a| *a /= m.max(1.0));
            c
        };
        let (a, b) = (centroid(true, &taken), centroid(false, &taken));
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let dot = |r: &[f64]| r.iter().zip(&d).map(|(x, y)| x * y).sum::<f64>();
        let mid = (dot(&a) + dot(&b)) / 2.0;
        let refined: Vec<bool> = z.iter().map(|r| dot(r) > mid).collect();
        let m = refined.iter().filter(|x| **x).count();
        if m >= self.min_cluster && n - m >= self.min_cluster {
            taken = refined;
        }
        Some((taken, ratio))
    }
}

impl Whiten {
    fn apply(&self, hidden: &[f32]) -> Vec<f64> {
        self.projection
            .iter()
            .map(|row| {
                row.iter()
                    .zip(hidden.iter().zip(&self.mean))
                    .map(|(p, (h, m))| f64::from(*p) * (f64::from(*h) - f64::from(*m)))
                    .sum()
            })
            .collect()
    }
}

fn add_outer(sum: &mut [f64], r: &[f64], sign: f64) {
    let k = r.len();
    for i in 0..k {
        for j in 0..k {
            sum[i * k + j] += sign * r[i] * r[j];
        }
    }
}

fn proj2(r: &[f64], v: &[f64]) -> f64 {
    let p: f64 = r.iter().zip(v).map(|(a, b)| a * b).sum();
    p * p
}

/// Largest eigenvalue and its eigenvector of a symmetric `k × k` matrix (cyclic Jacobi
/// rotations: exact to rounding for the small matrices the scan uses).
fn top_eigen(s: &[f64], k: usize) -> (f64, Vec<f64>) {
    let mut a = s.to_vec();
    let mut v = vec![0.0; k * k];
    for i in 0..k {
        v[i * k + i] = 1.0;
    }
    for _sweep in 0..50 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j] * a[i * k + j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s_ = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s_ * arq;
                    a[r * k + q] = s_ * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s_ * aqr;
                    a[q * k + r] = s_ * apr + c * aqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = c * vrp - s_ * vrq;
                    v[r * k + q] = s_ * vrp + c * vrq;
                }
            }
        }
    }
    let top = (0..k).max_by(|x, y| a[x * k + x].total_cmp(&a[y * k + y])).unwrap_or(0);
    (a[top * k + top], (0..k).map(|r| v[r * k + top]).collect())
}

/// The scan over a stream: the records released before (up to `capacity` of them, the ones
/// that passed) are the context of the next hold.
#[derive(Debug, Default)]
pub struct ScanWindow {
    context: VecDeque<ScanItem>,
    capacity: usize,
}

impl ScanWindow {
    /// A window that keeps up to `capacity` released records as context.
    pub fn new(capacity: usize) -> Self {
        Self {
            context: VecDeque::new(),
            capacity,
        }
    }

    /// Judge the held records against the context; the ones not flagged join the context.
    pub fn judge(&mut self, scan: &SpectralScan, held: Vec<ScanItem>) -> Vec<Option<ScanFlag>> {
        let n_ctx = self.context.len();
        let mut items: Vec<ScanItem> = self.context.drain(..).collect();
        items.extend(held);
        let judge: Vec<bool> = (0..items.len()).map(|i| i >= n_ctx).collect();
        let flags = scan.scan(&items, &judge);
        let mut context: VecDeque<ScanItem> = items
            .into_iter()
            .zip(&flags)
            .filter(|(_, f)| f.is_none())
            .map(|(item, _)| item)
            .collect();
        while context.len() > self.capacity {
            context.pop_front();
        }
        self.context = context;
        flags.into_iter().skip(n_ctx).collect()
    }

    /// Add a record the scan reads but never flags (one quarantined by a per-record check:
    /// a poison campaign's caught records are evidence about the ones that passed).
    pub fn observe(&mut self, item: ScanItem) {
        self.context.push_back(item);
        while self.context.len() > self.capacity {
            self.context.pop_front();
        }
    }

    /// Records kept as context.
    pub fn context_len(&self) -> usize {
        self.context.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A deterministic normal sample (Box-Muller over a 64-bit LCG).
    struct Normal(u64);
    impl Normal {
        fn next(&mut self) -> f64 {
            let mut u = || {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (a, b) = (u(), u());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        }
    }

    /// Two classes in 8 hidden dimensions; identity whitening; 4 scan dimensions.
    fn scan() -> SpectralScan {
        scan_with_bar(None)
    }

    /// As [`scan`], class a with its own doubt bar.
    fn scan_with_bar(bar_a: Option<f64>) -> SpectralScan {
        scan_with(bar_a, None)
    }

    /// As [`scan`], class a with its own doubt bar and the metadata's doubt quantile.
    fn scan_with(bar_a: Option<f64>, doubt_quantile: Option<f64>) -> SpectralScan {
        let width = 8;
        let mut classes = BTreeMap::new();
        for c in ["a", "b"] {
            let projection = (0..4)
                .map(|d| (0..width).map(|j| if j == d { 1.0 } else { 0.0 }).collect())
                .collect();
            classes.insert(
                c.to_owned(),
                ScanClass {
                    mean: vec![0.0; width],
                    projection,
                    doubt_threshold: if c == "a" { bar_a } else { None },
                },
            );
        }
        let meta = ScanMeta {
            doubt_quantile,
            ..meta(classes)
        };
        SpectralScan::new(&meta, &["a".into(), "b".into()], width).unwrap()
    }

    /// The tests' scan settings over `classes` (shared doubt bar 0.8).
    fn meta(classes: BTreeMap<String, ScanClass>) -> ScanMeta {
        ScanMeta {
            hidden_output: "hidden".into(),
            dims: 4,
            factor: 1.6,
            min_cluster: 5,
            min_class_rows: 20,
            doubt_threshold: 0.8,
            doubt_quantile: None,
            null_factors: Vec::new(),
            classes,
        }
    }

    fn item(g: &mut Normal, class: usize, shift: f64, score: f32) -> ScanItem {
        ScanItem {
            class: Some(class),
            hidden: (0..8)
                .map(|j| (g.next() + if j < 2 { shift } else { 0.0 }) as f32)
                .collect(),
            label_score: score,
        }
    }

    #[test]
    fn jacobi_finds_the_top_eigenpair() {
        // [[2,1],[1,2]]: eigenvalues 3 and 1, top vector (1,1)/sqrt 2.
        let (l, v) = top_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((l - 3.0).abs() < 1e-12);
        assert!((v[0].abs() - v[1].abs()).abs() < 1e-12 && (v[0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn clean_windows_flag_nothing_and_a_shared_shift_is_found() {
        let s = scan();
        let mut g = Normal(7);
        // Clean: 400 records of two classes, ten windows: nothing flagged.
        for _ in 0..10 {
            let items: Vec<ScanItem> = (0..400).map(|i| item(&mut g, i % 2, 0.0, 0.1)).collect();
            let flags = s.scan(&items, &vec![true; items.len()]);
            assert!(flags.iter().all(Option::is_none), "{:?}", flags.iter().flatten().next());
        }
        // Poisoned: 30 of class a's 230 share a shift of 4 in two dimensions.
        let mut items: Vec<ScanItem> = (0..400).map(|i| item(&mut g, i % 2, 0.0, 0.1)).collect();
        let first_poison = items.len();
        items.extend((0..30).map(|_| item(&mut g, 0, 4.0, 0.9)));
        let flags = s.scan(&items, &vec![true; items.len()]);
        let caught = flags[first_poison..].iter().filter(|f| f.is_some()).count();
        let false_alarms = flags[..first_poison].iter().filter(|f| f.is_some()).count();
        assert!(caught >= 28, "caught {caught} of 30");
        assert!(false_alarms <= 2, "{false_alarms} clean records flagged");
        let f = flags[first_poison].as_ref().unwrap();
        assert_eq!(f.class, "a");
        assert!(f.eigen_ratio > 1.6);
        // A clean-looking record of the poisoned class that the label model doubts is flagged
        // for that, and its reason names its score and the bar.
        let mut doubted = items.clone();
        doubted.push(item(&mut g, 0, 0.0, 0.95));
        let flags = s.scan(&doubted, &vec![true; doubted.len()]);
        let d = flags
            .last()
            .and_then(Option::as_ref)
            .expect("the doubted record is flagged");
        assert_eq!(d.why, ScanWhy::Doubt);
        let m = d.message(1500);
        assert!(m.contains("label score 0.950 over the doubt bar 0.800"), "{m}");
        // Context is never flagged: only the judged part can be.
        let judge: Vec<bool> = (0..items.len()).map(|i| i < first_poison).collect();
        let flags = s.scan(&items, &judge);
        assert!(flags[first_poison..].iter().all(Option::is_none));
    }

    /// A class's own doubt bar replaces the shared one for that class only; a bar that is
    /// not a number is refused.
    #[test]
    fn a_class_bar_replaces_the_shared_one() {
        let mut g = Normal(7);
        let mut items: Vec<ScanItem> = (0..400).map(|i| item(&mut g, i % 2, 0.0, 0.1)).collect();
        items.extend((0..30).map(|_| item(&mut g, 0, 4.0, 0.99)));
        // Two clean-looking records of the poisoned class a, doubted at 0.9 and 0.97.
        items.push(item(&mut g, 0, 0.0, 0.9));
        items.push(item(&mut g, 0, 0.0, 0.97));
        let n = items.len();
        let shared = scan().scan(&items, &vec![true; n]);
        assert!(
            shared[n - 2].is_some() && shared[n - 1].is_some(),
            "both over the shared 0.8"
        );
        let own = scan_with_bar(Some(0.95)).scan(&items, &vec![true; n]);
        assert!(own[n - 2].is_none(), "0.9 is under class a's own bar");
        let d = own[n - 1].as_ref().expect("0.97 is over class a's own bar");
        assert_eq!(d.why, ScanWhy::Doubt);
        assert!(
            d.message(1500).contains("over the doubt bar 0.950"),
            "{}",
            d.message(1500)
        );
        let mut meta = meta(BTreeMap::new());
        meta.classes.insert(
            "a".into(),
            ScanClass {
                mean: vec![0.0; 8],
                projection: vec![vec![1.0; 8]; 4],
                doubt_threshold: Some(f64::NAN),
            },
        );
        let err = SpectralScan::new(&meta, &["a".into()], 8).unwrap_err();
        assert!(err.contains("class a"), "{err}");
    }

    /// A campaign the per-record checks mostly catch: its cluster is in the context (the
    /// records they quarantined), and only a few milder escapees are held, too few to be
    /// members. They are flagged when the held records of the class hold more over the doubt
    /// bar than clean records would (binomial tail at 1 − `doubt_quantile`, under
    /// `EXCESS_ALPHA`); a few doubted records, or no quantile to test against, flag nothing.
    #[test]
    fn escapees_of_a_caught_campaign_are_flagged_by_their_excess() {
        let window = |g: &mut Normal, escapees: usize| {
            // Context: a clean stream and 40 quarantined poison records of class a.
            let mut items: Vec<ScanItem> = (0..400).map(|i| item(g, i % 2, 0.0, 0.1)).collect();
            items.extend((0..40).map(|_| item(g, 0, 4.0, 0.99)));
            let context = items.len();
            // Held: 48 clean records of a, 40 of b, and the escapees (mildly shifted, doubted).
            items.extend((0..48).map(|_| item(g, 0, 0.0, 0.1)));
            items.extend((0..40).map(|_| item(g, 1, 0.0, 0.1)));
            items.extend((0..escapees).map(|_| item(g, 0, 0.5, 0.99)));
            let judge: Vec<bool> = (0..items.len()).map(|i| i >= context).collect();
            (items, judge)
        };
        let s = scan_with(None, Some(0.95));
        let mut g = Normal(21);
        let (items, judge) = window(&mut g, 8);
        let n = items.len();
        let flags = s.scan(&items, &judge);
        let caught = flags[n - 8..].iter().filter(|f| f.is_some()).count();
        let clean = flags[..n - 8].iter().filter(|f| f.is_some()).count();
        assert_eq!((caught, clean), (8, 0), "{:?}", flags.iter().flatten().next());
        let f = flags[n - 1].as_ref().unwrap();
        let e = f.excess.expect("flagged for the excess");
        assert_eq!((e.held, e.doubted), (56, 8));
        assert!(e.p_value < EXCESS_ALPHA && f.mislabelling, "{f:?}");
        assert!(
            f.message(1500)
                .contains("8 of the class's 56 held records are over the bar"),
            "{}",
            f.message(1500)
        );
        // The same window judged without a quantile to test against: nothing.
        assert!(scan().scan(&items, &judge).iter().all(Option::is_none));
        // Three doubted escapees among 51 are what clean records may give: nothing.
        let (items, judge) = window(&mut g, 3);
        assert!(s.scan(&items, &judge).iter().all(Option::is_none));
    }

    /// A mislabelling campaign's cluster flags only its members the label model doubts (the
    /// clean records the split took in are believed); a campaign that keeps true labels is
    /// flagged by the cluster alone.
    #[test]
    fn members_need_the_doubt_only_when_the_campaign_mislabels() {
        let s = scan();
        let mut g = Normal(13);
        let mut items: Vec<ScanItem> = (0..400).map(|i| item(&mut g, i % 2, 0.0, 0.1)).collect();
        let first = items.len();
        // 30 records share a shift; 24 of them mislabelled (score 0.9), 6 believed (0.1).
        items.extend((0..30).map(|k| item(&mut g, 0, 4.0, if k < 24 { 0.9 } else { 0.1 })));
        let flags = s.scan(&items, &vec![true; items.len()]);
        let doubted = flags[first..first + 24].iter().filter(|f| f.is_some()).count();
        let believed = flags[first + 24..].iter().filter(|f| f.is_some()).count();
        assert!(doubted >= 22, "{doubted} of 24 doubted members flagged");
        assert_eq!(believed, 0, "members the label model believes are not flagged");
        let f = flags[first].as_ref().unwrap();
        assert!(f.mislabelling && f.why == ScanWhy::Cluster);
        assert!(
            f.message(1500).contains("as it does most of the cluster's"),
            "{}",
            f.message(1500)
        );
        // The same shift with true labels (every score 0.1): the cluster alone flags them.
        let mut items: Vec<ScanItem> = (0..400).map(|i| item(&mut g, i % 2, 0.0, 0.1)).collect();
        items.extend((0..30).map(|_| item(&mut g, 0, 4.0, 0.1)));
        let flags = s.scan(&items, &vec![true; items.len()]);
        let caught = flags[first..].iter().filter(|f| f.is_some()).count();
        assert!(caught >= 28, "caught {caught} of 30");
        assert!(!flags[first].as_ref().unwrap().mislabelling);
    }

    /// A stream whose windows differ from the trusted rows in every class (sorted, or
    /// drifting) raises no cluster; a campaign against one class on top of it is still found.
    #[test]
    fn what_moves_every_class_is_not_a_cluster() {
        let s = scan();
        let mut g = Normal(5);
        let stretched = |g: &mut Normal, class: usize, shift: f64| ScanItem {
            class: Some(class),
            hidden: (0..8)
                .map(|j| (g.next() * if j == 0 { 1.8 } else { 1.0 } + if j < 2 { shift } else { 0.0 }) as f32)
                .collect(),
            label_score: 0.1,
        };
        for _ in 0..10 {
            let items: Vec<ScanItem> = (0..400).map(|i| stretched(&mut g, i % 2, 0.0)).collect();
            let flags = s.scan(&items, &vec![true; items.len()]);
            assert!(flags.iter().all(Option::is_none), "{:?}", flags.iter().flatten().next());
        }
        let mut items: Vec<ScanItem> = (0..400).map(|i| stretched(&mut g, i % 2, 0.0)).collect();
        let first_poison = items.len();
        items.extend((0..30).map(|_| stretched(&mut g, 0, 6.0)));
        let flags = s.scan(&items, &vec![true; items.len()]);
        let caught = flags[first_poison..].iter().filter(|f| f.is_some()).count();
        assert!(caught >= 28, "caught {caught} of 30");
        let f = flags[first_poison].as_ref().unwrap();
        assert!(f.reference > 1.5, "the other class sets the bar: {}", f.reference);
    }

    #[test]
    fn the_window_keeps_passed_records_as_context() {
        let s = scan();
        let mut g = Normal(11);
        let mut w = ScanWindow::new(300);
        let clean: Vec<ScanItem> = (0..400).map(|i| item(&mut g, i % 2, 0.0, 0.1)).collect();
        assert!(w.judge(&s, clean).iter().all(Option::is_none));
        assert_eq!(w.context_len(), 300);
        // A small hold of poison alone is too few to scan, but the context makes the window.
        let poison: Vec<ScanItem> = (0..25).map(|_| item(&mut g, 0, 4.0, 0.9)).collect();
        let flags = w.judge(&s, poison);
        assert!(flags.iter().filter(|f| f.is_some()).count() >= 23);
        // Flagged records stay out of the context.
        assert_eq!(w.context_len(), 300);
    }
}
