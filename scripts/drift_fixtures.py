#!/usr/bin/env python3
"""Reference values for guard-stats' drift tests, computed once with SciPy and stored as
fixtures (crates/guard-stats/tests/fixtures/drift.json). Re-run only to add cases:
    pip install scipy numpy && python3 scripts/drift_fixtures.py
"""
import json, os
import numpy as np
from scipy import stats, special
from scipy.spatial import distance

rng = np.random.default_rng(20261125)
cases = []

def sample_case(name, a, b):
    a = [float(x) for x in a]; b = [float(x) for x in b]
    ks = stats.ks_2samp(a, b, method="asymp")
    n1, n2 = len(a), len(b)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    va, vb = np.var(a, ddof=1), np.var(b, ddof=1)
    f = va / vb
    f_p = 2 * min(stats.f.cdf(f, n1 - 1, n2 - 1), stats.f.sf(f, n1 - 1, n2 - 1))
    cases.append({
        "name": name, "kind": "samples", "a": a, "b": b,
        "ks_statistic": float(ks.statistic),
        "ks_pvalue_kstwo": float(ks.pvalue),
        "ks_pvalue_kolmogorov": float(special.kolmogorov(np.sqrt(en) * ks.statistic)),
        "wasserstein": float(stats.wasserstein_distance(a, b)),
        "variance_ratio": float(f), "variance_ratio_pvalue": float(min(1.0, f_p)),
    })

def counts_case(name, e, o):
    e = np.asarray(e, float); o = np.asarray(o, float)
    chi2, p, dof, _ = stats.chi2_contingency(np.vstack([e, o]), correction=False)
    pe, po = e / e.sum(), o / o.sum()
    eps = 1e-6
    pe2, po2 = np.maximum(pe, eps), np.maximum(po, eps)
    psi = float(np.sum((po2 - pe2) * np.log(po2 / pe2)))
    cases.append({
        "name": name, "kind": "counts", "expected": e.tolist(), "observed": o.tolist(),
        "chi2": float(chi2), "chi2_pvalue": float(p), "chi2_dof": int(dof),
        "psi": psi, "js_distance": float(distance.jensenshannon(pe, po, base=2)),
    })

sample_case("same_normal", rng.normal(0, 1, 400), rng.normal(0, 1, 300))
sample_case("shifted_normal", rng.normal(0, 1, 500), rng.normal(0.3, 1, 500))
sample_case("noisier", rng.normal(5, 1, 250), rng.normal(5, 2, 350))
sample_case("ties_integers", rng.integers(0, 10, 300), rng.integers(0, 12, 200))
sample_case("tiny", [1.0, 2.0, 3.0], [2.5, 3.5, 4.5, 5.5])
counts_case("labels_same", [500, 300, 200], [260, 140, 100])
counts_case("labels_flipped", [500, 300, 200], [150, 150, 200])
counts_case("bins_with_zero", [100, 50, 0, 25, 10], [90, 60, 5, 20, 10])

def bh_case(name, ps):
    cases.append({"name": name, "kind": "bh", "p": [float(x) for x in ps],
                  "adjusted": [float(x) for x in stats.false_discovery_control(ps, method="bh")]})

bh_case("bh_mixed", [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
bh_case("bh_unsorted", [0.5, 0.01, 0.2, 0.0001, 0.03])

out = os.path.join(os.path.dirname(__file__), "..", "crates", "guard-stats", "tests", "fixtures", "drift.json")
with open(out, "w") as f:
    json.dump({"scipy": __import__("scipy").__version__, "cases": cases}, f, indent=1)
print(f"{len(cases)} cases -> {out}")
