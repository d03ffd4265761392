"""The anchors of issue 14, on the same rows as `ingest-guard evaluate`: cleanlab on the
label-flip stream, IBM ART's spectral-signature and activation-clustering defences on the
backdoor streams. Outside CI (it installs cleanlab and ART into its own environment; see
`scripts/anchors.sh`, which runs `split`, `evaluate --write-attacked` and this).

    python scripts/anchors.py --attacked DIR --tensor /pixels --label /label \
        --stream flip=0.jsonl --stream badnets=1.jsonl --stream blend=2.jsonl

Each stream file holds `{"poison": bool, "record": {...}}` lines (`evaluate --write-attacked`).
The anchors are training-set defences: each gets the attacked stream as a training set.
- cleanlab 2.x `find_label_issues` on out-of-sample class probabilities (5-fold
  `cross_val_predict`) of an MLP of the guard's label-model size (one hidden layer of 128,
  L2 1.0, 100 epochs, scikit-learn), plus precision at recall 0.86 ranked by its
  label-quality score;
- ART 1.20 `SpectralSignatureDefense` (expected poison share 0.1; default 0.33 too) and
  `ActivationDefence` (2 clusters, PCA to 10 dimensions, the smaller cluster is poison) on the
  hidden layer of the same MLP trained on the stream.
Prints one JSON line per stream and method: flagged, precision, recall.
"""
import argparse, json, os, sys, warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_predict
from sklearn.neural_network import MLPClassifier

warnings.filterwarnings("ignore", category=ConvergenceWarning)


def pointer_get(v, p):
    for t in p.lstrip("/").split("/"):
        v = v.get(t) if isinstance(v, dict) else None
    return v


def load(path, tensor, label):
    x, y, poison = [], [], []
    for line in open(path):
        r = json.loads(line)
        rec = r["record"]
        x.append(pointer_get(rec, tensor))
        y.append(str(pointer_get(rec, label)))
        poison.append(bool(r["poison"]))
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    return (x - lo) / ((hi - lo) or 1.0), np.asarray(y), np.asarray(poison)


def mlp(seed=7):
    return MLPClassifier(hidden_layer_sizes=(128,), alpha=1.0, max_iter=100, random_state=seed)


def scores(flagged, poison):
    tp = int(np.sum(flagged & poison))
    fp = int(np.sum(flagged & ~poison))
    return dict(flagged=int(flagged.sum()), precision=round(tp / max(1, tp + fp), 4),
                recall=round(tp / max(1, int(poison.sum())), 4))


def precision_at_recall(rank_bad_first, poison, recall=0.86):
    need = int(np.ceil(recall * poison.sum()))
    tp = 0
    for k, i in enumerate(rank_bad_first):
        tp += int(poison[i])
        if tp >= need:
            return round(tp / (k + 1), 4)
    return None


def run_cleanlab(x, y, poison):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    classes = sorted(set(y))
    yi = np.array([classes.index(v) for v in y])
    probs = cross_val_predict(mlp(), x, yi, cv=5, method="predict_proba")
    issues = find_label_issues(labels=yi, pred_probs=probs)
    quality = get_label_quality_scores(labels=yi, pred_probs=probs)
    out = scores(np.asarray(issues, dtype=bool), poison)
    out["precision_at_recall_0.86"] = precision_at_recall(np.argsort(quality), poison)
    return out


class HiddenLayer:
    """What ART's poison defences read from a classifier, over a scikit-learn MLP: the class
    count, the layer names, and the activations of the (only) hidden layer."""

    def __init__(self, model, nb_classes):
        self.model = model
        self.nb_classes = nb_classes
        self.layer_names = ["hidden"]

    def get_activations(self, x, layer=0, batch_size=128, framework=False):
        a = x @ self.model.coefs_[0] + self.model.intercepts_[0]
        return np.maximum(a, 0)

    def predict(self, x, **kwargs):
        return self.model.predict_proba(x)


def run_art(x, y, poison):
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    classes = sorted(set(y))
    yi = np.array([classes.index(v) for v in y])
    onehot = np.eye(len(classes))[yi]
    model = mlp().fit(x, yi)
    clf = HiddenLayer(model, len(classes))
    out = {}
    for pp in (0.1, 0.33):
        d = SpectralSignatureDefense(clf, x, onehot, expected_pp_poison=pp)
        _, is_clean = d.detect_poison()
        out[f"spectral_signature_pp{pp}"] = scores(np.asarray(is_clean) == 0, poison)
    d = ActivationDefence(clf, x, onehot)
    _, is_clean = d.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")
    out["activation_clustering"] = scores(np.asarray(is_clean) == 0, poison)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attacked", required=True)
    ap.add_argument("--tensor", default="/pixels")
    ap.add_argument("--label", default="/label")
    ap.add_argument("--stream", action="append", default=[], help="NAME=FILE (flip streams get cleanlab)")
    a = ap.parse_args()
    for spec in a.stream:
        name, file = spec.split("=", 1)
        x, y, poison = load(os.path.join(a.attacked, file), a.tensor, a.label)
        if name.startswith("flip"):
            results = {"cleanlab": run_cleanlab(x, y, poison)}
        else:
            results = run_art(x, y, poison)
        for method, r in results.items():
            print(json.dumps(dict(stream=name, rows=len(y), poison=int(poison.sum()), method=method, **r)))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
