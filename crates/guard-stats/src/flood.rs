//! Near-duplicate floods: a producer that repeats one record with small changes (to weigh a
//! poison pattern, or to crowd out the others) is visible in no single record, only in how
//! its records pile up in one place.
//!
//! The test is a density ratio against the trusted data, so it needs no notion of "how near
//! is near" tuned per data set. At `baseline` time the trusted rows (numeric features and
//! tensors, standardised with the trusted means and deviations) are projected on
//! [`FLOOD_TABLES`] × 4 random directions; each group of 4 projections cuts the space into
//! cells half a trusted deviation wide along each direction (random offsets), hashed into
//! [`FLOOD_BUCKETS`] buckets. The [`FloodProfile`] keeps, per table, how many trusted rows
//! fell in each bucket: crowded regions (Shuttle's or diamonds' rows pile up in a few
//! dimensions) have large counts, empty ones none.
//!
//! On the stream, each source has a window of its last `window` records' buckets. When a
//! record's bucket holds `c` of the source's `n` recent records, the chance of that many under
//! the trusted distribution is the binomial tail `P(X ≥ c)`, `X ~ Bin(n, p)`, with `p` the
//! bucket's trusted share taken at an upper confidence bound (Wilson, one-sided 0.999, so a
//! bucket the trusted rows barely visited is not judged empty). The smallest tail over the
//! tables, times the number of tables (Bonferroni), is the record's p-value; it is flagged
//! when that is at most `alpha`, the bucket holds at least `min_copies` records and at least
//! `rate` of the source's recent records (so the source repeats itself beyond a configured
//! rate: an honest stream in its natural order crowds too, which the trusted sample, drawn
//! across the whole period, does not show). Honest
//! rows in crowded regions are expected there; near-copies of one record land in one cell
//! (their projected distance is far below a cell) and their count soon leaves any trusted
//! share behind.
//!
//! Memory is bounded: the profile is `FLOOD_TABLES × FLOOD_BUCKETS` counters plus the
//! projection matrix (16 floats per input value); each source keeps `window` × 4 bucket ids
//! (8 KB at 1,000), for at most `max_sources` sources (the least recently seen is forgotten
//! beyond that).

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, DiscreteCDF};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Hash tables (groups of projections).
pub const FLOOD_TABLES: usize = 4;
/// Projections per table.
const PER_TABLE: usize = 4;
const PROJECTIONS: usize = FLOOD_TABLES * PER_TABLE;
/// Buckets per table.
pub const FLOOD_BUCKETS: usize = 1 << 14;
/// Cell width along each projection, in trusted deviations of that projection.
const CELL_WIDTH: f64 = 0.5;
/// Trusted rows kept (a uniform sample) to build the profile.
const MAX_PROFILE_ROWS: usize = 20_000;
/// Fewer trusted rows than this build no profile.
const MIN_PROFILE_ROWS: usize = 50;
/// One-sided normal quantile of the upper bound on a bucket's trusted share (0.999).
const Z_UPPER: f64 = 3.09;

/// The trusted rows' layout over the hash cells (part of the baseline file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodProfile {
    /// Values per row (numeric features, then every tensor's values).
    pub width: usize,
    /// Seed of the projection directions and offsets.
    pub seed: u64,
    /// Trusted mean per value.
    pub center: Vec<f32>,
    /// Trusted deviation per value (floored at a tenth of the median non-zero one).
    pub scale: Vec<f32>,
    /// Cell width per projection.
    pub cell: Vec<f32>,
    /// Trusted rows counted.
    pub rows: u64,
    /// Per table, the non-empty buckets as `(bucket, rows)`.
    pub counts: Vec<Vec<(u32, u32)>>,
}

/// Collects trusted rows (a uniform sample of at most 20,000) for a [`FloodProfile`].
#[derive(Debug, Clone, Default)]
pub struct FloodProfileBuilder {
    width: Option<usize>,
    rows: Vec<Vec<f32>>,
    seen: u64,
    rng: u64,
}

impl FloodProfileBuilder {
    /// Add one trusted row (rows of another width than the first are ignored).
    pub fn push(&mut self, row: &[f32]) {
        if row.is_empty() || *self.width.get_or_insert(row.len()) != row.len() {
            return;
        }
        self.seen += 1;
        if self.rows.len() < MAX_PROFILE_ROWS {
            self.rows.push(row.to_vec());
            return;
        }
        // Reservoir sampling (algorithm R) with a fixed-seed generator: builds are repeatable.
        let j = (splitmix(&mut self.rng) % self.seen) as usize;
        if let Some(slot) = self.rows.get_mut(j) {
            slot.clear();
            slot.extend_from_slice(row);
        }
    }

    /// The profile, or `None` with fewer than 50 rows.
    pub fn build(self) -> Option<FloodProfile> {
        let width = self.width?;
        if self.rows.len() < MIN_PROFILE_ROWS {
            return None;
        }
        let n = self.rows.len();
        let mut center = vec![0.0f64; width];
        let mut m2 = vec![0.0f64; width];
        let mut k = vec![0u64; width];
        for r in &self.rows {
            for (j, v) in r.iter().enumerate() {
                if v.is_finite() {
                    k[j] += 1;
                    let d = f64::from(*v) - center[j];
                    center[j] += d / k[j] as f64;
                    m2[j] += d * (f64::from(*v) - center[j]);
                }
            }
        }
        let sds: Vec<f64> = m2
            .iter()
            .zip(&k)
            .map(|(m, k)| (m / (*k).max(1) as f64).sqrt())
            .map(|sd| if sd.is_finite() { sd } else { 0.0 })
            .collect();
        // A value that barely varies in the trusted rows (an image's border pixel) would
        // weigh its smallest change as many deviations: deviations are floored at a tenth of
        // the median of the non-zero ones (values of one kind, pixels, share a scale; a
        // median is not moved by one feature in other units, a price among lengths).
        let mut nonzero: Vec<f64> = sds.iter().copied().filter(|s| *s > 1e-9).collect();
        nonzero.sort_by(f64::total_cmp);
        let floor = nonzero.get(nonzero.len() / 2).map_or(1.0, |m| 0.1 * m);
        let scale: Vec<f32> = sds.iter().map(|sd| sd.max(floor) as f32).collect();
        let seed = 0x5EED_F100_D000_0001;
        let mut profile = FloodProfile {
            width,
            seed,
            center: center.iter().map(|c| *c as f32).collect(),
            scale,
            cell: vec![1.0; PROJECTIONS],
            rows: n as u64,
            counts: vec![Vec::new(); FLOOD_TABLES],
        };
        let planes = Planes::new(width, seed);
        let projected: Vec<[f64; PROJECTIONS]> = self.rows.iter().map(|r| planes.project(&profile, r)).collect();
        for (p, cell) in profile.cell.iter_mut().enumerate() {
            let mean = projected.iter().map(|x| x[p]).sum::<f64>() / n as f64;
            let var = projected.iter().map(|x| (x[p] - mean).powi(2)).sum::<f64>() / n as f64;
            let sd = var.sqrt();
            *cell = if sd > 1e-9 && sd.is_finite() {
                (CELL_WIDTH * sd) as f32
            } else {
                1.0
            };
        }
        let mut dense = vec![vec![0u32; FLOOD_BUCKETS]; FLOOD_TABLES];
        for x in &projected {
            for (t, b) in planes.buckets(&profile, x).iter().enumerate() {
                dense[t][usize::from(*b)] += 1;
            }
        }
        profile.counts = dense
            .iter()
            .map(|d| {
                d.iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(b, c)| (b as u32, *c))
                    .collect()
            })
            .collect();
        Some(profile)
    }
}

/// The projection directions and offsets of a profile (regenerated from its seed).
#[derive(Debug, Clone)]
struct Planes {
    /// `[width][PROJECTIONS]`, standard normal entries.
    dirs: Vec<f32>,
    /// Per projection, an offset in cells, uniform in [0, 1).
    offsets: [f64; PROJECTIONS],
}

impl Planes {
    fn new(width: usize, seed: u64) -> Self {
        let mut state = seed;
        let mut unit = move || ((splitmix(&mut state) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let mut dirs = Vec::with_capacity(width * PROJECTIONS);
        for _ in 0..width * PROJECTIONS {
            // Box-Muller: a standard normal.
            let (a, b) = (unit(), unit());
            dirs.push(((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32);
        }
        let mut offsets = [0.0; PROJECTIONS];
        offsets.iter_mut().for_each(|o| *o = unit());
        Self { dirs, offsets }
    }

    /// Standardise and project `row` (a missing or non-finite value counts as the mean).
    fn project(&self, profile: &FloodProfile, row: &[f32]) -> [f64; PROJECTIONS] {
        let mut acc = [0.0f32; PROJECTIONS];
        for (j, v) in row.iter().enumerate().take(profile.width) {
            if !v.is_finite() {
                continue;
            }
            let z = (v - profile.center[j]) / profile.scale[j];
            if !z.is_finite() {
                continue;
            }
            let d = &self.dirs[j * PROJECTIONS..(j + 1) * PROJECTIONS];
            for (a, u) in acc.iter_mut().zip(d) {
                *a += z * u;
            }
        }
        acc.map(f64::from)
    }

    /// Each table's bucket for projected `x`.
    fn buckets(&self, profile: &FloodProfile, x: &[f64; PROJECTIONS]) -> [u16; FLOOD_TABLES] {
        let mut out = [0u16; FLOOD_TABLES];
        for (t, o) in out.iter_mut().enumerate() {
            let mut h = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
            let range = t * PER_TABLE..(t + 1) * PER_TABLE;
            for ((v, cell), offset) in x[range.clone()]
                .iter()
                .zip(&profile.cell[range.clone()])
                .zip(&self.offsets[range])
            {
                // `as` saturates (and maps NaN to 0): a huge value is one far cell.
                let c = (v / f64::from(*cell) + offset).floor() as i64;
                h ^= c as u64;
                h = splitmix(&mut h);
            }
            *o = (h % FLOOD_BUCKETS as u64) as u16;
        }
        out
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A profile ready to judge with: dense counts and the projection matrix.
#[derive(Debug, Clone)]
pub struct FloodReference {
    profile: FloodProfile,
    planes: Planes,
    dense: Vec<Vec<u32>>,
}

impl FloodReference {
    /// Expand `profile` (its counts into dense tables, its directions from the seed). A
    /// profile whose parts do not fit together (a hand-edited baseline file) is refused.
    pub fn new(profile: FloodProfile) -> Result<Self, crate::StatsError> {
        if profile.cell.len() != PROJECTIONS
            || profile.center.len() != profile.width
            || profile.scale.len() != profile.width
            || profile.width == 0
            || profile.width > 1 << 20
        {
            return Err(crate::StatsError::Degenerate("flood profile: sizes do not match"));
        }
        let planes = Planes::new(profile.width, profile.seed);
        let mut dense = vec![vec![0u32; FLOOD_BUCKETS]; FLOOD_TABLES];
        for (t, list) in profile.counts.iter().enumerate().take(FLOOD_TABLES) {
            for (b, c) in list {
                if let Some(slot) = dense[t].get_mut(*b as usize) {
                    *slot = *c;
                }
            }
        }
        Ok(Self { profile, planes, dense })
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.profile.width
    }

    /// Upper confidence bound of the trusted share of `table`'s bucket `b`.
    fn share_bound(&self, table: usize, b: u16) -> f64 {
        let k = f64::from(self.dense[table][usize::from(b)]);
        let n = self.profile.rows.max(1) as f64;
        let z2 = Z_UPPER * Z_UPPER;
        ((k + z2 / 2.0 + Z_UPPER * (k + z2 / 4.0).sqrt()) / n).min(1.0)
    }
}

/// What the detector needs to know (the `[flood]` config section).
#[derive(Debug, Clone, PartialEq)]
pub struct FloodSettings {
    /// Recent records kept per source.
    pub window: usize,
    /// A bucket must hold at least this many of a source's recent records to flag.
    pub min_copies: u32,
    /// Flag when the record's p-value (Bonferroni over the tables) is at most this.
    pub alpha: f64,
    /// ... and the cell holds at least this share of the source's recent records (of at least
    /// `min_window` records while the window fills): a source "repeats itself beyond" it.
    /// Honest streams in their natural order crowd too (sorted data sets, idle sensors): the
    /// largest share an honest source reached on the shipped data sets, in file order, was
    /// 0.12 (diamonds) and 0.09 (flights).
    pub rate: f64,
    /// See `rate`.
    pub min_window: usize,
    /// Sources tracked (the least recently seen is forgotten beyond this).
    pub max_sources: usize,
}

impl Default for FloodSettings {
    fn default() -> Self {
        Self {
            window: 1_000,
            min_copies: 8,
            alpha: 1e-6,
            rate: 0.2,
            min_window: 100,
            max_sources: 1_024,
        }
    }
}

/// A flagged record.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodFlag {
    /// Records of the source's window in the record's cell (the record included).
    pub copies: u32,
    /// Records in the source's window.
    pub window: usize,
    /// How many the trusted data predicts there at most (its upper share bound × window).
    pub expected: f64,
    /// The record's p-value.
    pub p_value: f64,
}

impl FloodFlag {
    /// One line for the quarantine reason.
    pub fn message(&self, source: &str) -> String {
        format!(
            "near-duplicate flood: {} of the last {} records from source {source} fall in one cell where the trusted data predicts at most {:.1} (p = {:.1e})",
            self.copies, self.window, self.expected, self.p_value
        )
    }
}

/// A source's recent cells, one `u64` a record (four 16-bit bucket ids); no counters: a
/// cell's count is a scan of the window (lane-wise compares, 1,000 records in well under a
/// microsecond), a tenth of the memory of hash-map counters.
#[derive(Debug, Default)]
struct SourceWindow {
    ring: VecDeque<u64>,
    last: u64,
}

const LANES_LOW: u64 = 0x7FFF_7FFF_7FFF_7FFF;
const LANES_ONE: u64 = 0x0001_0001_0001_0001;

fn pack(cells: &[u16; FLOOD_TABLES]) -> u64 {
    cells
        .iter()
        .enumerate()
        .fold(0, |acc, (t, c)| acc | (u64::from(*c) << (16 * t)))
}

impl SourceWindow {
    /// How many records of the window share each table's cell with `cells` (packed).
    fn counts(&self, cells: u64) -> [u32; FLOOD_TABLES] {
        let mut out = [0u32; FLOOD_TABLES];
        let (a, b) = self.ring.as_slices();
        // Lane sums stay below 2^16 per chunk.
        for chunk in a.chunks(u16::MAX as usize).chain(b.chunks(u16::MAX as usize)) {
            let mut acc = 0u64;
            for r in chunk {
                let v = r ^ cells;
                // High bit of a lane set exactly when the lane is zero (no carry crosses lanes).
                let zero = !(((v & LANES_LOW) + LANES_LOW) | v | LANES_LOW);
                acc += (zero >> 15) & LANES_ONE;
            }
            for (t, o) in out.iter_mut().enumerate() {
                *o += ((acc >> (16 * t)) & 0xFFFF) as u32;
            }
        }
        out
    }
}

/// One route's near-duplicate detector (see the module docs).
#[derive(Debug)]
pub struct FloodDetector {
    reference: Arc<FloodReference>,
    settings: FloodSettings,
    sources: HashMap<Box<str>, SourceWindow>,
    tick: u64,
    row: Vec<f32>,
}

impl FloodDetector {
    /// A detector judging against `reference`.
    pub fn new(reference: Arc<FloodReference>, settings: FloodSettings) -> Self {
        Self {
            reference,
            settings,
            sources: HashMap::new(),
            tick: 0,
            row: Vec::new(),
        }
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Forget what `source` sent (its block was released: judge it afresh).
    pub fn forget(&mut self, source: &str) {
        self.sources.remove(source);
    }

    /// Judge one record of `source` whose values (numeric features, then tensors; NaN when
    /// missing) are `values`. Returns a flag when it is part of a flood.
    pub fn observe(&mut self, source: &str, values: impl IntoIterator<Item = f32>) -> Option<FloodFlag> {
        let mut row = std::mem::take(&mut self.row);
        row.clear();
        row.extend(values.into_iter().take(self.reference.width()));
        row.resize(self.reference.width(), f32::NAN);
        let r = &self.reference;
        let x = r.planes.project(&r.profile, &row);
        let buckets = r.planes.buckets(&r.profile, &x);
        self.row = row;
        self.tick += 1;
        let window = self.settings.window.max(1);
        if !self.sources.contains_key(source) && self.sources.len() >= self.settings.max_sources.max(1) {
            if let Some(oldest) = self.sources.iter().min_by_key(|(_, w)| w.last).map(|(k, _)| k.clone()) {
                self.sources.remove(&oldest);
            }
        }
        let w = self.sources.entry(source.into()).or_default();
        w.last = self.tick;
        let packed = pack(&buckets);
        w.ring.push_back(packed);
        while w.ring.len() > window {
            w.ring.pop_front();
        }
        let n = w.ring.len();
        let counts = w.counts(packed);
        let mut best: Option<(f64, u32, f64)> = None;
        for (t, (b, c)) in buckets.iter().zip(counts).enumerate() {
            if c < self.settings.min_copies {
                continue;
            }
            let p = r.share_bound(t, *b);
            let expected = p * n as f64;
            if f64::from(c) <= expected || f64::from(c) < self.settings.rate * n.max(self.settings.min_window) as f64 {
                continue;
            }
            let tail = binomial_tail(c, n, p);
            if best.is_none_or(|(bt, _, _)| tail < bt) {
                best = Some((tail, c, expected));
            }
        }
        let (tail, copies, expected) = best?;
        let p_value = (tail * FLOOD_TABLES as f64).min(1.0);
        (p_value <= self.settings.alpha).then_some(FloodFlag {
            copies,
            window: n,
            expected,
            p_value,
        })
    }
}

/// `P(X ≥ c)` for `X ~ Bin(n, p)`.
fn binomial_tail(c: u32, n: usize, p: f64) -> f64 {
    if c == 0 {
        return 1.0;
    }
    match Binomial::new(p.clamp(0.0, 1.0), n as u64) {
        Ok(b) => b.sf(u64::from(c) - 1),
        Err(_) => 1.0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gen(seed: &mut u64) -> f32 {
        ((splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64) as f32
    }

    fn reference(width: usize, rows: usize) -> Arc<FloodReference> {
        let mut s = 1u64;
        let mut b = FloodProfileBuilder::default();
        for _ in 0..rows {
            let r: Vec<f32> = (0..width).map(|_| gen(&mut s)).collect();
            b.push(&r);
        }
        Arc::new(FloodReference::new(b.build().unwrap()).unwrap())
    }

    #[test]
    fn honest_rows_pass_and_near_copies_from_one_source_are_flagged() {
        let r = reference(6, 5_000);
        let mut d = FloodDetector::new(Arc::clone(&r), FloodSettings::default());
        let mut s = 99u64;
        let mut honest = 0;
        for _ in 0..20_000 {
            let row: Vec<f32> = (0..6).map(|_| gen(&mut s)).collect();
            honest += usize::from(d.observe("honest", row).is_some());
        }
        assert_eq!(honest, 0);
        let base: Vec<f32> = (0..6).map(|_| gen(&mut s)).collect();
        let mut caught = 0;
        for _ in 0..200 {
            let copy: Vec<f32> = base.iter().map(|v| v + (gen(&mut s) - 0.5) * 0.005).collect();
            caught += usize::from(d.observe("flooder", copy).is_some());
        }
        // The first 19 fill the window (20 % of at least 100 records); the rest are flagged.
        assert!(caught >= 180, "{caught}");
        // The honest source is still judged on its own window.
        let row: Vec<f32> = (0..6).map(|_| gen(&mut s)).collect();
        assert!(d.observe("honest", row).is_none());
    }

    #[test]
    fn the_trusted_density_decides_what_a_crowd_is() {
        // Half the trusted rows are one point: a source sending that point is not a flood.
        let mut s = 3u64;
        let mut b = FloodProfileBuilder::default();
        for i in 0..4_000 {
            let r: Vec<f32> = if i % 2 == 0 {
                vec![0.5; 4]
            } else {
                (0..4).map(|_| gen(&mut s)).collect()
            };
            b.push(&r);
        }
        let r = Arc::new(FloodReference::new(b.build().unwrap()).unwrap());
        let mut d = FloodDetector::new(r, FloodSettings::default());
        let mut flagged = 0;
        for i in 0..4_000 {
            let row: Vec<f32> = if i % 2 == 0 {
                vec![0.5; 4]
            } else {
                (0..4).map(|_| gen(&mut s)).collect()
            };
            flagged += usize::from(d.observe("s", row).is_some());
        }
        assert_eq!(flagged, 0);
    }

    #[test]
    fn lane_counts_equal_a_plain_count() {
        let mut s = 17u64;
        let mut w = SourceWindow::default();
        let cells: Vec<[u16; FLOOD_TABLES]> = (0..5_000)
            .map(|_| std::array::from_fn(|_| [0u16, 1, 0x7FFF, 0x8000, 0xFFFF][(splitmix(&mut s) % 5) as usize]))
            .collect();
        w.ring.extend(cells.iter().map(pack));
        for probe in cells.iter().take(50) {
            let want: [u32; FLOOD_TABLES] =
                std::array::from_fn(|t| cells.iter().filter(|c| c[t] == probe[t]).count() as u32);
            assert_eq!(w.counts(pack(probe)), want);
        }
    }

    #[test]
    fn sources_are_bounded_and_forgotten() {
        let r = reference(3, 200);
        let settings = FloodSettings {
            max_sources: 10,
            ..FloodSettings::default()
        };
        let mut d = FloodDetector::new(r, settings);
        for i in 0..1_000 {
            d.observe(&format!("s{i}"), [0.1, 0.2, 0.3]);
        }
        assert_eq!(d.sources(), 10);
        d.forget("s999");
        assert_eq!(d.sources(), 9);
    }

    #[test]
    fn odd_rows_never_panic() {
        let r = reference(3, 200);
        let mut d = FloodDetector::new(r, FloodSettings::default());
        for row in [
            vec![],
            vec![f32::NAN; 3],
            vec![f32::INFINITY, f32::NEG_INFINITY, f32::MAX],
            vec![1.0; 50],
        ] {
            d.observe("x", row);
        }
        let p = FloodProfileBuilder::default().build();
        assert!(p.is_none());
    }

    #[test]
    fn a_profile_round_trips_through_json() {
        let r = reference(5, 300);
        let text = serde_json::to_string(&r.profile).unwrap();
        let back: FloodProfile = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r.profile);
    }
}
