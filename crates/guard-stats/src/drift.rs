//! Two-sample drift tests: a window against a trusted baseline.
//!
//! Each function documents the reference it reproduces; `tests/reference.rs` checks them
//! against SciPy (values stored in `tests/fixtures/drift.json`, made by
//! `scripts/drift_fixtures.py`) to 1e-6.

use crate::{Moments, StatsError};
use statrs::distribution::{ChiSquared, ContinuousCDF, FisherSnedecor};

/// Two-sample Kolmogorov–Smirnov result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// The statistic D = sup |F₁(x) − F₂(x)| (equals SciPy's `ks_2samp(...).statistic`).
    pub statistic: f64,
    /// Two-sided p-value from the limiting Kolmogorov distribution at √(n·m/(n+m))·D
    /// (SciPy `special.kolmogorov`). For the window sizes the guard uses (hundreds of records
    /// and up) this is within about 1/√n of SciPy's finite-n `kstwo` p-value.
    pub pvalue: f64,
}

/// The finite values of both samples, each sorted; an error if either side has none.
fn sorted_finite_pair(a: &[f64], b: &[f64], what: &'static str) -> Result<(Vec<f64>, Vec<f64>), StatsError> {
    let sorted = |x: &[f64]| {
        let mut v: Vec<f64> = x.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (a, b) = (sorted(a), sorted(b));
    if a.is_empty() || b.is_empty() {
        return Err(StatsError::Empty(what));
    }
    Ok((a, b))
}

/// Two-sample KS test on raw values (non-finite values are ignored).
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Result<KsResult, StatsError> {
    let (a, b) = sorted_finite_pair(a, b, "ks_2samp needs values on both sides")?;
    let (n1, n2) = (a.len(), b.len());
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    // Evaluate both empirical CDFs (right-continuous, as `searchsorted(side="right")`) at every
    // distinct value while both samples still have values; past that the gap only shrinks.
    while i < n1 && j < n2 {
        let x = a[i].min(b[j]);
        while i < n1 && a[i] <= x {
            i += 1;
        }
        while j < n2 && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n1 as f64 - j as f64 / n2 as f64).abs());
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = m * n / (m + n);
    Ok(KsResult {
        statistic: d,
        pvalue: kolmogorov_sf(en.sqrt() * d),
    })
}

/// Survival function of the Kolmogorov distribution, Q(x) = P(K > x) (SciPy
/// `special.kolmogorov`). Uses the alternating series for x ≥ 1 and Jacobi's theta form below,
/// each of which converges in a handful of terms in its range.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let q = if x < 1.0 {
        // Q = 1 − √(2π)/x · Σ_{k≥1} exp(−(2k−1)²π²/(8x²))
        let f = -std::f64::consts::PI * std::f64::consts::PI / (8.0 * x * x);
        let s: f64 = (1..=20)
            .map(|k| ((2 * k - 1) as f64).powi(2))
            .map(|w| (w * f).exp())
            .sum();
        1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * s
    } else {
        // Q = 2 Σ_{k≥1} (−1)^{k−1} exp(−2k²x²)
        2.0 * (1..=100)
            .map(|k| {
                let t = (-2.0 * (k * k) as f64 * x * x).exp();
                if k % 2 == 1 {
                    t
                } else {
                    -t
                }
            })
            .sum::<f64>()
    };
    q.clamp(0.0, 1.0)
}

/// Floor applied to bin proportions in [`psi`] so an empty bin does not make it infinite.
pub const PSI_EPSILON: f64 = 1e-6;

/// Population Stability Index of `observed` counts against `expected` counts over the same
/// bins: Σ (oᵢ − eᵢ)·ln(oᵢ/eᵢ) on proportions floored at [`PSI_EPSILON`]. Rule of thumb:
/// < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift.
pub fn psi(expected: &[f64], observed: &[f64]) -> Result<f64, StatsError> {
    let (pe, po) = proportions(expected, observed)?;
    Ok(pe
        .iter()
        .zip(&po)
        .map(|(e, o)| {
            let (e, o) = (e.max(PSI_EPSILON), o.max(PSI_EPSILON));
            (o - e) * (o / e).ln()
        })
        .sum())
}

/// Jensen–Shannon distance (base 2, in [0, 1]) between two binned distributions given as
/// counts (SciPy `spatial.distance.jensenshannon(p, q, base=2)`).
pub fn js_distance(p: &[f64], q: &[f64]) -> Result<f64, StatsError> {
    let (p, q) = proportions(p, q)?;
    let rel = |a: f64, m: f64| if a > 0.0 { a * (a / m).ln() } else { 0.0 };
    let js: f64 = p
        .iter()
        .zip(&q)
        .map(|(a, b)| {
            let m = (a + b) / 2.0;
            rel(*a, m) + rel(*b, m)
        })
        .sum::<f64>()
        / 2.0;
    Ok((js.max(0.0) / std::f64::consts::LN_2).sqrt())
}

fn proportions(a: &[f64], b: &[f64]) -> Result<(Vec<f64>, Vec<f64>), StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            left: a.len(),
            right: b.len(),
        });
    }
    let (sa, sb): (f64, f64) = (a.iter().sum(), b.iter().sum());
    if a.is_empty() || sa <= 0.0 || sb <= 0.0 {
        return Err(StatsError::Empty("distribution with no mass"));
    }
    Ok((a.iter().map(|x| x / sa).collect(), b.iter().map(|x| x / sb).collect()))
}

/// Chi-squared test of homogeneity result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chi2Result {
    /// Pearson's statistic.
    pub statistic: f64,
    /// Upper-tail p-value.
    pub pvalue: f64,
    /// Degrees of freedom (categories with any count, minus one).
    pub dof: usize,
}

/// Chi-squared test that `expected` and `observed` counts over the same categories come from
/// one distribution: the 2×k contingency test without continuity correction (SciPy
/// `chi2_contingency([expected, observed], correction=False)`). Categories empty on both sides
/// are dropped.
pub fn chi2_homogeneity(expected: &[f64], observed: &[f64]) -> Result<Chi2Result, StatsError> {
    if expected.len() != observed.len() {
        return Err(StatsError::LengthMismatch {
            left: expected.len(),
            right: observed.len(),
        });
    }
    let cols: Vec<(f64, f64)> = expected
        .iter()
        .zip(observed)
        .map(|(e, o)| (*e, *o))
        .filter(|(e, o)| e + o > 0.0)
        .collect();
    let (r1, r2): (f64, f64) = (cols.iter().map(|c| c.0).sum(), cols.iter().map(|c| c.1).sum());
    if r1 <= 0.0 || r2 <= 0.0 {
        return Err(StatsError::Empty("chi-squared needs counts on both sides"));
    }
    if cols.len() < 2 {
        return Err(StatsError::Degenerate("chi-squared needs at least two categories"));
    }
    let n = r1 + r2;
    let statistic: f64 = cols
        .iter()
        .map(|(e, o)| {
            let c = e + o;
            let (x1, x2) = (r1 * c / n, r2 * c / n);
            (e - x1).powi(2) / x1 + (o - x2).powi(2) / x2
        })
        .sum();
    let dof = cols.len() - 1;
    let dist = ChiSquared::new(dof as f64).map_err(|_| StatsError::Degenerate("chi-squared degrees of freedom"))?;
    Ok(Chi2Result {
        statistic,
        pvalue: dist.sf(statistic),
        dof,
    })
}

/// Wasserstein-1 (earth mover's) distance between two samples (SciPy
/// `stats.wasserstein_distance(u, v)`). Non-finite values are ignored.
pub fn wasserstein1(u: &[f64], v: &[f64]) -> Result<f64, StatsError> {
    let (u, v) = sorted_finite_pair(u, v, "wasserstein needs values on both sides")?;
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    // Walk the merged order; between consecutive points the CDF gap is constant.
    let mut prev = u[0].min(v[0]);
    while i < u.len() || j < v.len() {
        let x = match (u.get(i), v.get(j)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => break,
        };
        total += (i as f64 / nu - j as f64 / nv).abs() * (x - prev);
        while i < u.len() && u[i] <= x {
            i += 1;
        }
        while j < v.len() && v[j] <= x {
            j += 1;
        }
        prev = x;
    }
    Ok(total)
}

/// Variance-ratio (F) test result: injected noise shows as a window variance far from the
/// baseline's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceRatio {
    /// s²(window) / s²(baseline).
    pub ratio: f64,
    /// Two-sided p-value under F(n_w − 1, n_b − 1).
    pub pvalue: f64,
}

/// Two-sided F-test of equal variances from moments alone (works on streaming windows).
pub fn variance_ratio(window: &Moments, baseline: &Moments) -> Result<VarianceRatio, StatsError> {
    if window.count() < 2 || baseline.count() < 2 {
        return Err(StatsError::Degenerate("variance ratio needs two values on each side"));
    }
    let (vw, vb) = (window.variance(), baseline.variance());
    if vb <= 0.0 {
        return Err(StatsError::Degenerate("baseline variance is zero"));
    }
    let ratio = vw / vb;
    let f = FisherSnedecor::new((window.count() - 1) as f64, (baseline.count() - 1) as f64)
        .map_err(|_| StatsError::Degenerate("F degrees of freedom"))?;
    let pvalue = (2.0 * f.cdf(ratio).min(f.sf(ratio))).min(1.0);
    Ok(VarianceRatio { ratio, pvalue })
}
