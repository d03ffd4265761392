"""The training backend of `ingest-guard train`: anomaly and label-consistency models for any
domain schema, calibrated on held-out trusted rows and exported to ONNX (no torch:
scikit-learn trains, jax only the convolutional label member of image rows, the `onnx` helper API
writes the graphs, onnxruntime checks the export).

    ingest-guard train --schema S --input TRUSTED.jsonl --out DIR [--roles anomaly,label,adversarial]
                       [--target-fpr 0.01] [--fpr-confidence 0.9] [--seed 7] [--label-model conv|mlp|svm]
                       [--neighbours auto|K]

runs `python scripts/train_models.py` with the same flags (the binary carries a copy of this
file). Nothing in here knows a domain: what a row holds comes from the schema's `x-guard`
section, and the network sizes come from the data's width and row count.

Inputs (the model's input row, in `inputs` order, as the guard's Rust extractor builds it)
  numeric      `x-guard.numeric`: the value, NaN when absent or null (the graph imputes the
               training mean);
  categorical  `x-guard.categorical`: the level's index in the metadata's `levels` (the
               levels seen in the trusted rows, in schema enum order when there is one),
               -1 for an unseen or absent value; the graph one-hot encodes it;
  tensor       `x-guard.tensors`: the flattened elements.

Roles
  anomaly  an MLP autoencoder. The graph normalises (per column for numeric features, one
           scale per tensor), reconstructs, and outputs `feature_error` [N, width] (squared
           error per input value, a categorical's one-hot block summed: the explanation) and
           `score` [N]: their mean for tabular rows; for rows with a tensor, the largest of the
           mean of the 16 largest errors (a local patch such as a trigger), the mean absolute
           error where the reconstruction is background (a faint whole-image pattern: a
           blended trigger, an adversarial perturbation's ±ε; absolute, since squared the
           faint values vanish next to a few missed stroke pixels) and the mean
           error over the row (a whole image unlike the trusted ones, such as noise in a set of
           textured photographs, which has no background), each divided by its own threshold:
           the three statistics are calibrated as members of the joint budget (below), so the
           score passes 1, the role's threshold, when any one passes its own. (Divided by
           one scale each, the statistic with the heaviest tail on clean rows set the
           threshold for all: on colour photographs, the background error of dark crops hid
           noise images that the mean error alone catches.)
  label    an MLP classifier over every input except the label. The graph outputs
           `probabilities` [N, C]; the guard's score is 1 - p(given label). Trained only when
           the schema names a label and the trusted rows hold at least two classes. The graph
           also outputs its first hidden layer, `hidden` [N, H], which the guard's window scan
           reads (`scan` in the metadata: per class, the trusted rows' mean and a whitening
           projection; see `scan_section` and crates/guard-score/src/scan.rs).
           With `--augment shifts` (opt-in), on rows with an image grid of at least 8 x 8
           the MLP also trains on each row shifted by one element in each of four directions
           (`shifted_copies`), for the same row visits (epochs divided by the copies, at least
           SHIFT_MIN_ITERATIONS); the scan's statistics, the neighbour vote's reference rows,
           the conv and svm members and the calibration all see the rows as they are.
           With `--label-model conv` (the default) and an image tensor, the probabilities are
           the mean of the MLP's and a small convolutional network's (ConvBranch), and `hidden`
           holds both hidden layers; without an image tensor, and with `--label-model mlp`,
           the MLP alone; with `--label-model svm`, an RBF SVM's (SvmMember), `hidden` staying
           the MLP's. With `--neighbours auto|K` (default auto; see Neighbours) and k > 0,
           `probabilities` is the vote of the k training rows nearest in `hidden` (the
           classifier one more voter) and the classifier's own are `classifier_probabilities`;
           the role then has two statistics, 1 - p of each, calibrated as members of the joint
           budget, and the score is the larger over its own threshold (`label_statistics` in
           the metadata, `threshold` 1).
  adversarial  feature squeezing (Xu, Evans, Qi, NDSS 2018) for rows with a tensor: a second
           classifier (same sizes, L2 alpha 1e-4: a sharp decision surface leaves perturbed
           inputs fragile under squeezing) runs on the row and on each squeezed copy of its
           tensors in one graph, which outputs `log_probabilities` [N, 1 + S, C] (original
           first). Squeezers: bit-depth reduction to b bits (b = 1..5, the two smallest kept)
           and a 2x2 median filter over the last two axes of a tensor of rank >= 2; a squeezer
           is kept when the classifier's accuracy on squeezed calibration rows is within 2
           points of its accuracy on the rows as they are (the paper's rule: squeezing must
           not destroy what the classifier sees). The guard's score is the largest rise, over
           the squeezers, of log p(given label) (the predicted class when there is none), each
           log-probability floored at ln 1e-6: an adversarial perturbation pushes the given
           label's probability down, and squeezing it away gives it back. Trained with label.
           With `--reformer auto|on` (and the anomaly role's image autoencoder), the autoencoder's
           reconstruction of the tensor, clipped to [0, 1], is one more squeezed copy (MagNet's
           reformer, Meng and Chen 2017): it undoes perturbations that bit depths cannot round
           away (FGSM at 0.2 of the range). Its clean rises run higher, so it has a threshold of
           its own: the bit-depth and median squeezers and the autoencoder are two members of
           the joint budget, and the score is the largest rise over its squeezer's threshold
           (`squeezer_thresholds` in the metadata, `threshold` 1). `auto` (the default) adds it
           only where the calibration rows can bound the budget with one more statistic.

Sizes (D = encoded width, n = training rows)
  autoencoder, tabular  (w, b, w), tanh, w = max(16, next power of two >= D) capped at 256,
                        b = max(2, round(0.4 D))
  autoencoder, tensor   (2 * next power of two >= sqrt D,), relu
  classifier            (4 * next power of two >= sqrt D,) clamped to [16, 256], relu;
                        L2 alpha 1.0 with a tensor (pixels are many weak inputs), 1e-4 else
  conv member           `--label-model conv` (default) on rows with an image grid: see ConvBranch
  iterations            clamp(round(1e8 / (n D)), 30, 300); the label model at least 100
                        (its probabilities rank label flips and its hidden layer feeds the
                        scan; wide tensor rows get few epochs from the rule, and 30 left it
                        under-trained: BENCHMARKS.md, "Label model epochs")

Calibration: rows of the input whose bucket(i, seed) is 0 or 1 (about 20 %) are held out of
training. A clean record is quarantined when any model fires, so the roles are calibrated
together. A threshold at a role's (m+1)-th largest of n calibration scores has, on further
clean rows, a false-positive rate distributed Beta(m + 1, n - m) (the order-statistic law of
exchangeable scores; exact for one role); the rate of "any role fires" is at most the sum over
the roles. The cuts m start at 0 (each threshold at the largest calibration score) and are
raised one role at a time while the `confidence` quantile of that sum (20,000 draws) stays
within the target: the budget then holds on the stream with that confidence. When even the
largest scores cannot meet it (too few calibration rows: one role needs about 2.3 / target
FPR at 90 %, more roles more), every threshold stays at its largest calibration score and the
metadata says so (`budget_met` false, `fpr_bound` over the target).
Metadata (inputs, levels, normalisation,
classes, threshold, calibration FPR, the trusted data's SHA-256, seed, sizes, versions) is
written beside each model, plus a parity fixture: rows with onnxruntime's outputs, which the
Rust tests reproduce to 1e-5. Deterministic for a seed (single-threaded BLAS is forced below).
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse, hashlib, json, math, sys, warnings

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
from onnx import TensorProto, helper, numpy_helper
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

warnings.filterwarnings("ignore", category=ConvergenceWarning)
OPSET = 17
TOPK = 16
BACKGROUND = 0.05  # normalised reconstruction below this counts as background (tensors)
MASK = (1 << 64) - 1
LOG_FLOOR = math.log(1e-6)  # adversarial: log-probabilities are floored here (guard-score does the same)
ACCURACY_DROP = 0.02  # adversarial: a squeezer may cost the classifier this much accuracy
SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # label MLP on image grids: shifted copies (`shifted_copies`)
IMAGE_MIN_SIDE = 8  # a tensor grid at least this many elements on each side is an image (Squeezers.image_grids): the conv member reads it, --augment shifts shifts it
SHIFT_MIN_ITERATIONS = 30  # ... trained for the same row visits as without them, at least this many epochs
LABEL_MIN_ITERATIONS = 100  # label model: fewest epochs (sklearn still stops once the loss settles)
SCAN_DIMS = 16  # window scan: whitened dimensions of the hidden representation
SCAN_SHRINK = 0.2  # window scan: covariance shrinkage toward a multiple of the identity
SCAN_DOUBT_SHARE = 0.5  # window scan: most of the budget the doubt rule may spend on one poisoned class's clean rows
SCAN_DOUBT_CANDIDATES = 2048  # window scan: most candidate doubt bars tried (quantiles of the calibration scores beyond)
SCAN_MIN_CLUSTER = 5  # window scan: fewer trimmed records than this is no cluster
SCAN_MIN_CLASS_ROWS = 20  # window scan: a class with fewer records in the window is not scanned
KNN_CANDIDATES = (0, 5, 10, 20, 40)  # label model: neighbour counts k tried (0: the classifier alone)
KNN_MAX_REFERENCE = 8192  # label model: most training rows the neighbours come from (a class-stratified sample beyond)
KNN_DRAWS = 50  # label model: simulated flip draws over the calibration rows that choose k
KNN_FLIP_RATE = 0.05  # label model: share of calibration rows a draw relabels
KNN_RECALL = 0.86  # label model: k is chosen by precision at this recall of the simulated flips


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def bucket(i, seed):
    """Row i's bucket 0..9; the same function is `bucket` in crates/guard-eval/src/scenario.rs."""
    return splitmix64((seed * 1_000_003 + i) & MASK) % 10


def pointer_get(value, pointer):
    if pointer == "":
        return value
    for token in pointer.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value.get(token)
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return None
        if value is None:
            return None
    return value


def category_text(v):
    """As the guard renders a categorical value (guard-core `category_text`)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return None


def number(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def tensor_values(v, shape, size):
    """A tensor's elements as the guard reads them (guard-core `extend_tensor`): a flat array's
    first `size` items, or arrays nested exactly as `shape`, row-major; [] when neither."""
    if not isinstance(v, list):
        return []
    if len(shape) >= 2 and v and isinstance(v[0], list):
        out = []

        def walk(a, sh):
            if not isinstance(a, list) or len(a) != sh[0]:
                return False
            if len(sh) == 1:
                out.extend(number(e) for e in a)
                return True
            return all(walk(b, sh[1:]) for b in a)
        return out if walk(v, shape) else []
    return [number(e) for e in v[:size]]


def fail(msg):
    print(f"train: {msg}", file=sys.stderr)
    sys.exit(2)


class Layout:
    """The model input row built from a record, as guard-score's `Extractor` builds it."""

    def __init__(self, schema, rows):
        g = schema.get("x-guard") or fail("the schema has no x-guard section")
        self.schema_id = g["id"]
        self.label_ptr = g.get("label")
        self.parts = []  # (kind, name, pointer, size)
        for f in g.get("numeric", []):
            self.parts.append(("numeric", f["name"], f["pointer"], 1))
        props = schema.get("properties", {})
        self.levels = {}
        for f in g.get("categorical", []):
            if f["pointer"] == g.get("source"):
                continue  # who sent a record is not what it looks like (sources are watched apart)
            seen = sorted({t for r in rows if (t := category_text(pointer_get(r, f["pointer"]))) is not None})
            enum = None
            top = f["pointer"].lstrip("/").split("/")
            if len(top) == 1 and isinstance(props.get(top[0]), dict):
                enum = props[top[0]].get("enum")
            if enum:
                order = [category_text(e) for e in enum if e is not None]
                seen = [e for e in order if e in set(seen)]
            self.levels[f["name"]] = seen
            self.parts.append(("categorical", f["name"], f["pointer"], 1))
        self.shapes = {t["name"]: t["shape"] for t in g.get("tensors", [])}
        self.channels_last = {t["name"]: t.get("channels", "first") == "last" for t in g.get("tensors", [])}
        for t in g.get("tensors", []):
            self.parts.append(("tensor", t["name"], t["pointer"], int(np.prod(t["shape"]))))
        self.width = sum(p[3] for p in self.parts)
        self.has_tensor = any(p[0] == "tensor" for p in self.parts)
        if self.width == 0:
            fail("the schema's x-guard section names no numeric, categorical or tensor feature")

    def inputs(self):
        return [p[1] for p in self.parts]

    def matrix(self, rows):
        x = np.full((len(rows), self.width), np.nan, dtype=np.float64)
        for i, r in enumerate(rows):
            c = 0
            for kind, name, ptr, size in self.parts:
                v = pointer_get(r, ptr)
                if kind == "numeric":
                    x[i, c] = number(v)
                elif kind == "categorical":
                    t = category_text(v)
                    lv = self.levels[name]
                    x[i, c] = lv.index(t) if t in lv else -1.0
                else:
                    vals = tensor_values(v, self.shapes[name], size)
                    x[i, c:c + len(vals)] = vals
                c += size
        return x

    def labels(self, rows):
        return np.array([category_text(pointer_get(r, self.label_ptr)) or "" for r in rows]) if self.label_ptr else None


class Encoder:
    """Imputation, normalisation and one-hot encoding: the front of both graphs, and its
    numpy twin for training."""

    def __init__(self, layout, x_train):
        self.layout = layout
        w = layout.width
        self.fill = np.zeros(w)
        self.mu = np.zeros(w)
        self.sd = np.ones(w)
        self.cont = []  # input columns passed through normalised
        self.cats = []  # (input column, number of levels)
        c = 0
        for kind, name, _, size in layout.parts:
            cols = slice(c, c + size)
            if kind == "numeric":
                v = x_train[:, c]
                ok = v[~np.isnan(v)]
                m = float(ok.mean()) if len(ok) else 0.0
                s = float(ok.std()) if len(ok) else 1.0
                self.fill[c], self.mu[c], self.sd[c] = m, m, s + 1e-6
                self.cont.append(c)
            elif kind == "categorical":
                self.fill[c] = -1.0
                self.cats.append((c, len(layout.levels[name])))
            else:
                v = x_train[:, cols]
                lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
                self.fill[cols], self.mu[cols], self.sd[cols] = lo, lo, (hi - lo) or 1.0
                self.cont.extend(range(c, c + size))
            c += size
        self.identity = not self.cats
        self.dim = len(self.cont) + sum(n for _, n in self.cats)
        # internal dimension -> input column, for per-input feature errors
        self.owner = list(self.cont) + [c for c, n in self.cats for _ in range(n)]

    def numpy(self, x):
        x = np.where(np.isnan(x), self.fill, x)
        z = (x - self.mu) / self.sd
        if self.identity:
            return z
        parts = [z[:, self.cont]]
        for c, n in self.cats:
            parts.append((x[:, c:c + 1] == np.arange(n)[None, :]).astype(np.float64))
        return np.concatenate(parts, axis=1)

    def graph(self, nodes, inits):
        f32 = lambda a: np.asarray(a, dtype=np.float32)
        inits += [numpy_helper.from_array(f32(self.fill), "fill"), numpy_helper.from_array(f32(self.mu), "mu"),
                  numpy_helper.from_array(f32(self.sd), "sd")]
        nodes += [helper.make_node("IsNaN", ["x"], ["x_nan"]),
                  helper.make_node("Where", ["x_nan", "fill", "x"], ["xi"]),
                  helper.make_node("Sub", ["xi", "mu"], ["xc"]), helper.make_node("Div", ["xc", "sd"], ["z"])]
        if self.identity:
            return "z"
        inits.append(numpy_helper.from_array(np.array(self.cont, dtype=np.int64), "cont_idx"))
        nodes.append(helper.make_node("Gather", ["z", "cont_idx"], ["z_cont"], axis=1))
        blocks = ["z_cont"]
        for k, (c, n) in enumerate(self.cats):
            inits += [numpy_helper.from_array(np.array([c], dtype=np.int64), f"cat{k}_idx"),
                      numpy_helper.from_array(np.arange(n, dtype=np.float32), f"cat{k}_levels")]
            nodes += [helper.make_node("Gather", ["xi", f"cat{k}_idx"], [f"cat{k}_code"], axis=1),
                      helper.make_node("Equal", [f"cat{k}_code", f"cat{k}_levels"], [f"cat{k}_eq"]),
                      helper.make_node("Cast", [f"cat{k}_eq"], [f"cat{k}_hot"], to=TensorProto.FLOAT)]
            blocks.append(f"cat{k}_hot")
        nodes.append(helper.make_node("Concat", blocks, ["h"], axis=1))
        return "h"


def dense_layers(nodes, inits, x_name, coefs, intercepts, activation, prefix):
    """MatMul + Add (+ activation except after the last layer) from sklearn weights."""
    cur = x_name
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        wn, bn = f"{prefix}_w{i}", f"{prefix}_b{i}"
        inits += [numpy_helper.from_array(w.astype(np.float32), wn), numpy_helper.from_array(b.astype(np.float32), bn)]
        mm, out = f"{prefix}_mm{i}", f"{prefix}_h{i}"
        nodes += [helper.make_node("MatMul", [cur, wn], [mm]), helper.make_node("Add", [mm, bn], [out])]
        if i < len(coefs) - 1:
            act = {"tanh": "Tanh", "relu": "Relu"}[activation]
            nodes.append(helper.make_node(act, [out], [out + "_a"]))
            out = out + "_a"
        cur = out
    return cur


def feature_errors(ae, enc, h):
    """Per input value, the training rows' mean squared error (numpy twin of the graph's sum
    over each input's encoded dimensions)."""
    err = (ae.predict(h) - h) ** 2
    out = np.zeros(enc.layout.width)
    for d, c in enumerate(enc.owner):
        out[c] += err[:, d].mean()
    return np.maximum(out, 1e-6)


IMAGE_STATISTICS = ("top", "background", "mean")  # anomaly: the score's statistics for rows with a tensor


def autoencoder_graph(ae, enc, activation, scales, err_scale=None, stat_outputs=False):
    nodes, inits = [], []
    h = enc.graph(nodes, inits)
    rec = dense_layers(nodes, inits, h, ae.coefs_, ae.intercepts_, activation, "ae")
    nodes += [helper.make_node("Sub", [rec, h], ["diff"]), helper.make_node("Mul", ["diff", "diff"], ["err"])]
    width = enc.layout.width
    if enc.identity and err_scale is None:
        nodes.append(helper.make_node("Identity", ["err"], ["feature_error"]))
    else:
        # Per input value: the squared errors of its encoded dimensions summed (a categorical's
        # one-hot block), divided by their mean on the training rows (tabular rows), so an
        # input the autoencoder reconstructs poorly even on trusted rows (a heavy-tailed delay)
        # does not drown the inputs it reconstructs well.
        agg = np.zeros((enc.dim, width), dtype=np.float32)
        for d, c in enumerate(enc.owner):
            agg[d, c] = 1.0 if err_scale is None else 1.0 / err_scale[c]
        inits.append(numpy_helper.from_array(agg, "agg"))
        nodes.append(helper.make_node("MatMul", ["err", "agg"], ["feature_error"]))
    if scales is not None:
        c_top, c_bg, c_mean = scales
        inits += [
            numpy_helper.from_array(np.array([TOPK], dtype=np.int64), "k"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(BACKGROUND, dtype=np.float32), "bg_level"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
            numpy_helper.from_array(np.array(c_top, dtype=np.float32), "c_top"),
            numpy_helper.from_array(np.array(c_bg, dtype=np.float32), "c_bg"),
            numpy_helper.from_array(np.array(c_mean, dtype=np.float32), "c_mean"),
        ]
        nodes += [
            helper.make_node("TopK", ["err", "k"], ["top_err", "top_idx"], axis=1),
            helper.make_node("ReduceMean", ["top_err"], ["top_mean"], axes=[1], keepdims=0),
            helper.make_node("Less", [rec, "bg_level"], ["is_bg"]),
            helper.make_node("Cast", ["is_bg"], ["bg_mask"], to=TensorProto.FLOAT),
            helper.make_node("Abs", ["diff"], ["abs_err"]),
            helper.make_node("Mul", ["abs_err", "bg_mask"], ["bg_err"]),
            helper.make_node("ReduceSum", ["bg_err", "axis1"], ["bg_sum"], keepdims=0),
            helper.make_node("ReduceSum", ["bg_mask", "axis1"], ["bg_n"], keepdims=0),
            helper.make_node("Add", ["bg_n", "one"], ["bg_n1"]),
            helper.make_node("Div", ["bg_sum", "bg_n1"], ["bg_mean"]),
            helper.make_node("Div", ["top_mean", "c_top"], ["top_rel"]),
            helper.make_node("Div", ["bg_mean", "c_bg"], ["bg_rel"]),
            helper.make_node("ReduceMean", ["err"], ["all_mean"], axes=[1], keepdims=0),
            helper.make_node("Div", ["all_mean", "c_mean"], ["all_rel"]),
            helper.make_node("Max", ["top_rel", "bg_rel", "all_rel"], ["score"]),
        ]
    else:
        nodes.append(helper.make_node("ReduceMean", ["feature_error"], ["score"], axes=[1], keepdims=0))
    outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
               helper.make_tensor_value_info("feature_error", TensorProto.FLOAT, ["N", width])]
    if stat_outputs:  # for calibration only: each statistic over its scale
        outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N"]) for o in ("top_rel", "bg_rel", "all_rel")]
    return helper.make_graph(
        nodes, "guard_anomaly", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])], outputs, inits)


def class_logits(nodes, logits, clf, prefix):
    """One logit per class. scikit-learn fits two classes with one logistic output z, whose
    class probabilities are softmax([0, z]): a zero column is put in front of it."""
    if clf.coefs_[-1].shape[1] != 1:
        return logits
    nodes += [helper.make_node("Sub", [logits, logits], [f"{prefix}_zero"]),
              helper.make_node("Concat", [f"{prefix}_zero", logits], [f"{prefix}_logits2"], axis=1)]
    return f"{prefix}_logits2"


def classifier_graph(clf, enc, conv=None, neighbours=None, svm=None):
    """The label graph: the MLP alone, or with a ConvBranch the mean of both members'
    probabilities, `hidden` then holding both hidden layers (conv first), or with an SvmMember
    the SVM's probabilities and the MLP's hidden layer. With `neighbours`
    (a Neighbours with k > 0), `probabilities` is their vote and the classifier's own
    probabilities are the output `classifier_probabilities`."""
    nodes, inits = [], []
    h = enc.graph(nodes, inits)
    logits = dense_layers(nodes, inits, h, clf.coefs_, clf.intercepts_, clf.activation, "clf")
    logits = class_logits(nodes, logits, clf, "clf")
    width = clf.coefs_[0].shape[1]
    probs = "classifier_probabilities" if neighbours is not None else "probabilities"
    if svm is not None:
        nodes += [helper.make_node("Identity", [svm.graph(nodes, inits, h)], [probs]),
                  helper.make_node("Identity", ["clf_h0_a"], ["hidden"])]
    elif conv is None:
        nodes += [helper.make_node("Softmax", [logits], [probs], axis=1),
                  helper.make_node("Identity", ["clf_h0_a"], ["hidden"])]
    else:
        pc, hc = conv.graph(nodes, inits, h)
        inits.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), "ens_half"))
        nodes += [helper.make_node("Softmax", [logits], ["clf_probabilities"], axis=1),
                  helper.make_node("Add", ["clf_probabilities", pc], ["ens_sum"]),
                  helper.make_node("Mul", ["ens_sum", "ens_half"], [probs]),
                  helper.make_node("Concat", [hc, "clf_h0_a"], ["hidden"], axis=1)]
        width += CONV_HIDDEN
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(clf.classes_)]),
               helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", width])]
    if neighbours is not None:
        neighbours.graph(nodes, inits, "hidden", probs, "probabilities")
        outputs.append(helper.make_tensor_value_info(probs, TensorProto.FLOAT, ["N", len(clf.classes_)]))
    return helper.make_graph(
        nodes, "guard_label",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", enc.layout.width])],
        outputs, inits)


CONV_CHANNELS = (8, 16)  # label model: channels of the two 5x5 convolutions (each followed by 2x2 max pooling); 16, 32 ranked flips the same at 2.5x the scoring time (BENCHMARKS.md)
CONV_HIDDEN = 128  # label model: the conv branch's dense hidden layer


class ConvBranch:
    """The label model's convolutional member, for rows with an image-like tensor (a grid of at
    least IMAGE_MIN_SIDE on each side: its last two axes, the axes before them channels, or with
    `"channels": "last"` the two axes before the last, which holds the channels; the largest
    grid when there are several): two 5x5
    convolutions (zero padding 2, ReLU, 2x2 max pooling), their features and every other
    encoded column into a dense ReLU layer of CONV_HIDDEN, then one logit per class. Trained
    with jax (Adam, learning rate 1e-3, batches of 64, L2 1e-4 on the weights, epochs
    clamp(round(1e5 / n), 5, 30)); the ONNX graph is built node by node like the MLPs and
    checked against jax's forward pass on the training rows."""

    def __init__(self, grid, dim):
        self.start, self.size, self.hh, self.ww, last = grid
        self.channels = self.size // (self.hh * self.ww)  # the tensor's other axes, as channels
        self.channels_last = bool(last)
        self.dim = dim

    @staticmethod
    def grid_of(sq):
        grids = sq.image_grids()
        return max(grids, key=lambda g: g[1]) if grids else None

    def _forward(self, jnp, jax, p, h):
        if self.channels_last:
            img = h[:, self.start:self.start + self.size].reshape(-1, self.hh, self.ww, self.channels)
            img = jnp.transpose(img, (0, 3, 1, 2))
        else:
            img = h[:, self.start:self.start + self.size].reshape(-1, self.channels, self.hh, self.ww)
        rest = jnp.concatenate([h[:, :self.start], h[:, self.start + self.size:]], axis=1)
        for i in (1, 2):
            img = jax.lax.conv_general_dilated(img, p[f"c{i}"], (1, 1), ((2, 2), (2, 2)))
            img = jax.nn.relu(img + p[f"cb{i}"][None, :, None, None])
            img = jax.lax.reduce_window(img, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        feat = jnp.concatenate([img.reshape(img.shape[0], -1), rest], axis=1)
        hid = jax.nn.relu(feat @ p["d1"] + p["db1"])
        return hid @ p["d2"] + p["db2"], hid

    def fit(self, h, y, classes, seed):
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_platforms", "cpu")
        self.classes_ = list(classes)
        self.jax_version = jax.__version__
        yi = np.array([self.classes_.index(c) for c in y])
        k, (c1, c2) = len(self.classes_), CONV_CHANNELS
        side = lambda s: s // 4
        feat = c2 * side(self.hh) * side(self.ww) + self.dim - self.size
        keys = jax.random.split(jax.random.PRNGKey(seed), 4)
        he = lambda key, shape, fan: jax.random.normal(key, shape) * math.sqrt(2.0 / fan)
        p = dict(c1=he(keys[0], (c1, self.channels, 5, 5), 25 * self.channels), cb1=jnp.zeros(c1),
                 c2=he(keys[1], (c2, c1, 5, 5), 25 * c1), cb2=jnp.zeros(c2), d1=he(keys[2], (feat, CONV_HIDDEN), feat), db1=jnp.zeros(CONV_HIDDEN),
                 d2=he(keys[3], (CONV_HIDDEN, k), CONV_HIDDEN), db2=jnp.zeros(k))

        def loss(p, x, t):
            logits, _ = self._forward(jnp, jax, p, x)
            ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(x.shape[0]), t])
            return ce + 1e-4 * sum(jnp.sum(p[w] ** 2) for w in ("c1", "c2", "d1", "d2"))

        @jax.jit
        def step(p, m, v, t, x, target):
            g = jax.grad(loss)(p, x, target)
            m = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
            v = jax.tree.map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
            p = jax.tree.map(lambda w, a, b: w - 1e-3 * (a / (1 - 0.9 ** t)) / (jnp.sqrt(b / (1 - 0.999 ** t)) + 1e-8), p, m, v)
            return p, m, v

        m = jax.tree.map(jnp.zeros_like, p)
        v = jax.tree.map(jnp.zeros_like, p)
        rng = np.random.default_rng(seed)
        hf = h.astype(np.float32)
        self.epochs = int(min(30, max(5, round(1e5 / max(1, len(h))))))
        batch, t = min(64, len(h)), 0
        for _ in range(self.epochs):
            order = rng.permutation(len(h))
            for i in range(0, len(order) - batch + 1, batch):
                t += 1
                b = order[i:i + batch]
                p, m, v = step(p, m, v, float(t), hf[b], yi[b])
        self.params = {name: np.asarray(w, dtype=np.float32) for name, w in p.items()}
        fwd = jax.jit(lambda x: jax.nn.softmax(self._forward(jnp, jax, p, x)[0]))
        self.check = lambda x: np.concatenate([np.asarray(fwd(x[i:i + 1024])) for i in range(0, len(x), 1024)])
        return self

    def graph(self, nodes, inits, h):
        """Nodes from the encoded row `h` to this member's probabilities and hidden layer."""
        i64 = lambda a, n: inits.append(numpy_helper.from_array(np.array(a, dtype=np.int64), n))
        f32 = lambda a, n: inits.append(numpy_helper.from_array(np.asarray(a, dtype=np.float32), n))
        s, e = self.start, self.start + self.size
        i64([0], "cv_zero"), i64([s], "cv_s"), i64([e], "cv_e"), i64([1 << 62], "cv_end"), i64([1], "cv_ax")
        last = self.channels_last
        i64([-1, self.hh, self.ww, self.channels] if last else [-1, self.channels, self.hh, self.ww], "cv_shape")
        nodes += [helper.make_node("Slice", [h, "cv_zero", "cv_s", "cv_ax"], ["cv_left"]),
                  helper.make_node("Slice", [h, "cv_s", "cv_e", "cv_ax"], ["cv_mid"]),
                  helper.make_node("Slice", [h, "cv_e", "cv_end", "cv_ax"], ["cv_right"]),
                  helper.make_node("Reshape", ["cv_mid", "cv_shape"], ["cv_img0" if not last else "cv_hwc"])]
        if last:  # [N, h, w, c] -> [N, c, h, w]
            nodes.append(helper.make_node("Transpose", ["cv_hwc"], ["cv_img0"], perm=[0, 3, 1, 2]))
        cur = "cv_img0"
        for i in (1, 2):
            f32(self.params[f"c{i}"], f"cv_w{i}"), f32(self.params[f"cb{i}"], f"cv_b{i}")
            nodes += [helper.make_node("Conv", [cur, f"cv_w{i}", f"cv_b{i}"], [f"cv_conv{i}"], pads=[2, 2, 2, 2],
                                       kernel_shape=[5, 5]),
                      helper.make_node("Relu", [f"cv_conv{i}"], [f"cv_relu{i}"]),
                      helper.make_node("MaxPool", [f"cv_relu{i}"], [f"cv_img{i}"], kernel_shape=[2, 2], strides=[2, 2])]
            cur = f"cv_img{i}"
        f32(self.params["d1"], "cv_d1"), f32(self.params["db1"], "cv_db1")
        f32(self.params["d2"], "cv_d2"), f32(self.params["db2"], "cv_db2")
        nodes += [helper.make_node("Flatten", [cur], ["cv_flat"], axis=1),
                  helper.make_node("Concat", ["cv_flat", "cv_left", "cv_right"], ["cv_feat"], axis=1),
                  helper.make_node("MatMul", ["cv_feat", "cv_d1"], ["cv_mm1"]),
                  helper.make_node("Add", ["cv_mm1", "cv_db1"], ["cv_pre"]),
                  helper.make_node("Relu", ["cv_pre"], ["cv_hidden"]),
                  helper.make_node("MatMul", ["cv_hidden", "cv_d2"], ["cv_mm2"]),
                  helper.make_node("Add", ["cv_mm2", "cv_db2"], ["cv_logits"]),
                  helper.make_node("Softmax", ["cv_logits"], ["cv_probabilities"], axis=1)]
        return "cv_probabilities", "cv_hidden"


SVM_MAX_ROWS = 20000  # label model: `--label-model svm` trains on at most this many rows (kernel SVM training is quadratic)
SVM_MIN_PROB = 1e-7  # label model: libsvm clamps each pairwise probability into [this, 1 - this] (its min_prob)


class SvmMember:
    """The label model's kernel member, `--label-model svm`: scikit-learn's SVC with an RBF
    kernel (C = 1 and gamma = "scale", 1 / (D var(h)): scikit-learn's defaults, not chosen on
    any data set) and libsvm's probabilities: a sigmoid per pair of classes (Platt, fitted by
    internal cross-validation) and the pairwise coupling of Wu, Lin and Weng (JMLR 2004, their
    second method). On a few thousand rows a kernel machine is the stronger classifier (MNIST,
    about 2,000 training rows: accuracy 0.945 against the MLP's 0.91), and label flips are ranked
    by how sure the classifier is of another class. In the graph: squared distances to the
    support vectors (one MatMul), the kernel, the pairwise decision values (one MatMul with
    the dual coefficients), their sigmoids, and the coupling, whose solution p = z / sum(z)
    with Q z = 1 is found by Gauss-Jordan elimination unrolled over the C classes (Q is
    positive definite: no pivoting). Each pairwise probability is clamped into
    [SVM_MIN_PROB, 1 - SVM_MIN_PROB] as libsvm does: a sigmoid that rounds to 1 in float32
    would zero a pivot (the float32 elimination in numpy, on synthetic decision values of ten
    classes with one class far ahead: NaN on 17 of 200 rows without the clamp, errors under
    2e-7 against float64 with it). The MLP stays in the graph for `hidden`, the scan's
    representation."""

    def __init__(self, seed):
        self.seed = seed

    def fit(self, h, y, classes):
        from sklearn.svm import SVC
        if len(h) > SVM_MAX_ROWS:
            fail(f"--label-model svm trains on at most {SVM_MAX_ROWS} rows (kernel SVM training is quadratic in "
                 f"the rows; these are {len(h)}): use mlp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # `probability` is deprecated from 1.9 (pinned)
            try:
                self.svc = SVC(C=1.0, kernel="rbf", gamma="scale", probability=True, random_state=self.seed).fit(h, y)
            except ValueError as e:  # for instance a class too small for libsvm's internal cross-validation
                fail(f"--label-model svm: {e}")
            prob_a, prob_b = self.svc.probA_, self.svc.probB_
        if list(self.svc.classes_) != list(classes):
            fail("label: the SVM's classes differ from the MLP's")
        m, k = self.svc, len(classes)
        self.sv = m.support_vectors_.astype(np.float64)
        start = np.r_[0, np.cumsum(m.n_support_)]
        self.pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        # decision value of pair (i, j), positive for i: the dual coefficients of i's support
        # vectors against j and of j's against i (libsvm's one-vs-one layout)
        self.dual = np.zeros((len(self.sv), len(self.pairs)))
        for q, (i, j) in enumerate(self.pairs):
            self.dual[start[i]:start[i + 1], q] = m.dual_coef_[j - 1, start[i]:start[i + 1]]
            self.dual[start[j]:start[j + 1], q] = m.dual_coef_[i, start[j]:start[j + 1]]
        self.k, self.gamma = k, float(m._gamma)
        self.intercept, self.prob_a, self.prob_b = m.intercept_, prob_a, prob_b
        if k == 2:  # scikit-learn negates libsvm's binary decision function (positive for classes_[1])
            self.dual, self.intercept = -self.dual, -self.intercept
        return self

    def pairwise(self, h):
        """r[:, q] = P(i | i or j) for pair q = (i, j)."""
        d2 = np.maximum((h * h).sum(1)[:, None] - 2 * h @ self.sv.T + (self.sv * self.sv).sum(1)[None, :], 0)
        f = np.exp(-self.gamma * d2) @ self.dual + self.intercept
        return np.clip(1.0 / (1.0 + np.exp(f * self.prob_a + self.prob_b)), SVM_MIN_PROB, 1 - SVM_MIN_PROB)

    def probabilities(self, h):
        """numpy twin of the graph (float64)."""
        r = self.pairwise(h)
        if self.k == 2:  # one pair: libsvm's probabilities are its sigmoid
            return np.concatenate([r, 1 - r], 1)
        R = np.zeros((len(h), self.k, self.k))
        for q, (i, j) in enumerate(self.pairs):
            R[:, i, j], R[:, j, i] = r[:, q], 1 - r[:, q]
        Q = -np.transpose(R, (0, 2, 1)) * R + (R * R).sum(1)[:, :, None] * np.eye(self.k)[None]
        z = np.linalg.solve(Q, np.ones((len(h), self.k, 1)))[..., 0]
        p = np.maximum(z / z.sum(1, keepdims=True), 0)
        return p / p.sum(1, keepdims=True)

    def graph(self, nodes, inits, h):
        """Nodes from the encoded row `h` to this member's probabilities."""
        f32 = lambda a, n: inits.append(numpy_helper.from_array(np.asarray(a, dtype=np.float32), n))
        i64 = lambda a, n: inits.append(numpy_helper.from_array(np.asarray(a, dtype=np.int64), n))
        k, npairs = self.k, len(self.pairs)
        pos, neg = np.zeros((npairs, k * k)), np.zeros((npairs, k * k))
        for q, (i, j) in enumerate(self.pairs):
            pos[q, i * k + j], neg[q, j * k + i] = 1, 1
        f32(self.sv.T, "sv_t"), f32((self.sv * self.sv).sum(1), "sv_sq"), f32(-2.0, "sv_m2"), f32(0.0, "sv_0")
        f32(-self.gamma, "sv_mg"), f32(self.dual, "sv_dual"), f32(self.intercept, "sv_b")
        f32(self.prob_a, "sv_pa"), f32(self.prob_b, "sv_pb"), f32(1.0, "sv_1"), f32(pos, "sv_pos"), f32(neg, "sv_neg")
        f32(SVM_MIN_PROB, "sv_rmin"), f32(1 - SVM_MIN_PROB, "sv_rmax")
        f32(np.eye(k), "sv_eye"), f32(np.ones((1, k)), "sv_ones"), i64([-1, k, k], "sv_kk"), i64([1], "sv_ax1")
        nodes += [helper.make_node("Mul", [h, h], ["sv_hh"]),
                  helper.make_node("ReduceSum", ["sv_hh", "sv_ax1"], ["sv_hsq"], keepdims=1),
                  helper.make_node("MatMul", [h, "sv_t"], ["sv_cross"]),
                  helper.make_node("Mul", ["sv_cross", "sv_m2"], ["sv_cross2"]),
                  helper.make_node("Add", ["sv_hsq", "sv_cross2"], ["sv_d2a"]),
                  helper.make_node("Add", ["sv_d2a", "sv_sq"], ["sv_d2b"]),
                  helper.make_node("Max", ["sv_d2b", "sv_0"], ["sv_d2"]),
                  helper.make_node("Mul", ["sv_d2", "sv_mg"], ["sv_kx"]),
                  helper.make_node("Exp", ["sv_kx"], ["sv_kernel"]),
                  helper.make_node("MatMul", ["sv_kernel", "sv_dual"], ["sv_fa"]),
                  helper.make_node("Add", ["sv_fa", "sv_b"], ["sv_f"]),
                  helper.make_node("Mul", ["sv_f", "sv_pa"], ["sv_fp"]),
                  helper.make_node("Add", ["sv_fp", "sv_pb"], ["sv_fq"]),
                  helper.make_node("Neg", ["sv_fq"], ["sv_fn"]),
                  helper.make_node("Sigmoid", ["sv_fn"], ["sv_rs"]),
                  helper.make_node("Clip", ["sv_rs", "sv_rmin", "sv_rmax"], ["sv_r"]),
                  helper.make_node("Sub", ["sv_1", "sv_r"], ["sv_r1"])]
        if k == 2:  # one pair: libsvm's probabilities are its sigmoid
            nodes.append(helper.make_node("Concat", ["sv_r", "sv_r1"], ["sv_probabilities"], axis=1))
            return "sv_probabilities"
        nodes += [helper.make_node("MatMul", ["sv_r", "sv_pos"], ["sv_rp"]),
                  helper.make_node("MatMul", ["sv_r1", "sv_neg"], ["sv_rn"]),
                  helper.make_node("Add", ["sv_rp", "sv_rn"], ["sv_rflat"]),
                  helper.make_node("Reshape", ["sv_rflat", "sv_kk"], ["sv_R"]),
                  # Q = diag(sum_j R_ji^2) - R^T * R (elementwise)
                  helper.make_node("Mul", ["sv_R", "sv_R"], ["sv_R2"]),
                  helper.make_node("ReduceSum", ["sv_R2", "sv_ax1"], ["sv_col"], keepdims=0),
                  helper.make_node("Unsqueeze", ["sv_col", "sv_ax_last"], ["sv_col3"]),
                  helper.make_node("Mul", ["sv_col3", "sv_eye"], ["sv_diag"]),
                  helper.make_node("Transpose", ["sv_R"], ["sv_RT"], perm=[0, 2, 1]),
                  helper.make_node("Mul", ["sv_RT", "sv_R"], ["sv_off"]),
                  helper.make_node("Sub", ["sv_diag", "sv_off"], ["sv_Q0"]),
                  helper.make_node("Mul", ["sv_hsq", "sv_0"], ["sv_zero_col"]),
                  helper.make_node("Add", ["sv_zero_col", "sv_ones"], ["sv_b0"])]
        i64([2], "sv_ax_last")
        cur_m, cur_b = "sv_Q0", "sv_b0"
        for t in range(k):
            mask = np.ones((k, 1)); mask[t] = 0
            f32(mask, f"sv_mask{t}"), i64([t], f"sv_t{t}")
            nodes += [helper.make_node("Gather", [cur_m, f"sv_t{t}"], [f"sv_row{t}"], axis=1),  # [N, 1, k]
                      helper.make_node("Gather", [f"sv_row{t}", f"sv_t{t}"], [f"sv_piv{t}"], axis=2),  # [N, 1, 1]
                      helper.make_node("Gather", [cur_m, f"sv_t{t}"], [f"sv_colt{t}"], axis=2),  # [N, k, 1]
                      helper.make_node("Div", [f"sv_colt{t}", f"sv_piv{t}"], [f"sv_fac{t}"]),
                      helper.make_node("Mul", [f"sv_fac{t}", f"sv_mask{t}"], [f"sv_facm{t}"]),  # [N, k, 1]
                      helper.make_node("Mul", [f"sv_facm{t}", f"sv_row{t}"], [f"sv_upd{t}"]),  # [N, k, k]
                      helper.make_node("Sub", [cur_m, f"sv_upd{t}"], [f"sv_M{t}"]),
                      helper.make_node("Gather", [cur_b, f"sv_t{t}"], [f"sv_bt{t}"], axis=1),  # [N, 1]
                      helper.make_node("Squeeze", [f"sv_facm{t}", "sv_ax_last"], [f"sv_facv{t}"]),  # [N, k]
                      helper.make_node("Mul", [f"sv_facv{t}", f"sv_bt{t}"], [f"sv_bupd{t}"]),
                      helper.make_node("Sub", [cur_b, f"sv_bupd{t}"], [f"sv_B{t}"])]
            cur_m, cur_b = f"sv_M{t}", f"sv_B{t}"
        nodes += [helper.make_node("Mul", [cur_m, "sv_eye"], ["sv_mdiag"]),
                  helper.make_node("ReduceSum", ["sv_mdiag", "sv_ax_last"], ["sv_d"], keepdims=0),
                  helper.make_node("Div", [cur_b, "sv_d"], ["sv_z"]),
                  helper.make_node("ReduceSum", ["sv_z", "sv_ax1"], ["sv_zs"], keepdims=1),
                  helper.make_node("Div", ["sv_z", "sv_zs"], ["sv_p0"]),
                  helper.make_node("Max", ["sv_p0", "sv_0"], ["sv_p1"]),
                  helper.make_node("ReduceSum", ["sv_p1", "sv_ax1"], ["sv_ps"], keepdims=1),
                  helper.make_node("Div", ["sv_p1", "sv_ps"], ["sv_probabilities"])]
        return "sv_probabilities"


def hidden_of(clf, h):
    """numpy twin of the MLP label graph's `hidden` output (the first hidden layer, activated)."""
    a = h @ clf.coefs_[0] + clf.intercepts_[0]
    return np.maximum(a, 0) if clf.activation == "relu" else np.tanh(a)


class Neighbours:
    """Deep k-nearest-neighbour label consistency (Papernot & McDaniel 2018; Bahri, Jiang and
    Gupta, ICML 2020, on finding noisy labels): the label's probability is the vote of the k
    training rows nearest in the label graph's `hidden` representation, with the classifier
    as one more voter, p(c) = (count_c + p_classifier(c)) / (k + 1). A row whose label
    disagrees with its neighbourhood is a suspect even where the classifier itself is
    confidently wrong (it has fitted the training rows; the neighbourhood averages over them).
    k is chosen on the calibration rows, never on a stream: KNN_DRAWS draws relabel
    KNN_FLIP_RATE of them at random, and the k (among KNN_CANDIDATES, 0 being the classifier
    alone) whose score ranks the relabelled rows best at KNN_RECALL wins (the smallest within
    one standard error of the best). In the graph:
    squared distances to the reference rows by one MatMul, TopK, a Gather of their one-hot
    labels and a sum; the reference is an initializer, [M, H] floats (M <= KNN_MAX_REFERENCE)."""

    def __init__(self, r_train, yi_train, n_classes, seed):
        idx = np.arange(len(r_train))
        if len(idx) > KNN_MAX_REFERENCE:  # the same share of every class
            rng = np.random.default_rng(seed)
            keep = rng.permutation(len(idx))[:KNN_MAX_REFERENCE]
            idx = np.sort(keep)
        self.ref = r_train[idx].astype(np.float32)
        self.labels = yi_train[idx]
        self.n_classes = n_classes
        self.k = 0
        self.tried = {}

    def distances(self, r):
        """Blocks (start, rows, squared distances to the reference rows less the rows' own
        norm) of 1,024 rows of `r`, in float32 as the graph computes them."""
        r = r.astype(np.float32)
        r2 = (self.ref * self.ref).sum(1)
        for i in range(0, len(r), 1024):
            yield i, r[i:i + 1024], r2[None, :] - 2.0 * (r[i:i + 1024] @ self.ref.T)

    def counts(self, r, k):
        """Votes [N, C] of the k nearest reference rows (float32, as the graph computes)."""
        out = np.zeros((len(r), self.n_classes))
        for i, _, d in self.distances(r):
            near = np.argpartition(d, k - 1, axis=1)[:, :k]
            lab = self.labels[near]
            for c in range(self.n_classes):
                out[i:i + 1024, c] = (lab == c).sum(1)
        return out

    def tied(self, r):
        """Rows [N] whose k-th and (k+1)-th nearest reference rows are at the same distance, to
        float32 rounding: either may be the k-th neighbour, and numpy and the graph's TopK may
        choose differently (rows of discrete features tie often)."""
        out = np.zeros(len(r), bool)
        if self.k == 0 or self.k >= len(self.ref):
            return out
        ref_sq = float((self.ref * self.ref).sum(1).max())
        for i, block, d in self.distances(r):
            two = np.sort(np.partition(d, [self.k - 1, self.k], axis=1)[:, self.k - 1:self.k + 1], axis=1)
            scale = ref_sq + (block * block).sum(1)
            out[i:i + len(block)] = two[:, 1] - two[:, 0] <= 1e-4 * np.maximum(scale, 1e-6)
        return out

    def choose(self, r_cal, p_cal, yi_cal, seed):
        """Pick k on the calibration rows (hidden `r_cal`, classifier probabilities `p_cal`)."""
        ok = yi_cal >= 0
        r_cal, p_cal, yi_cal = r_cal[ok], p_cal[ok], yi_cal[ok]
        n = len(yi_cal)
        flips = max(1, round(KNN_FLIP_RATE * n))
        if n < 40 or self.n_classes < 2:
            return self
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(KNN_DRAWS):
            bad = rng.choice(n, flips, replace=False)
            given = yi_cal.copy()
            given[bad] = (given[bad] + rng.integers(1, self.n_classes, flips)) % self.n_classes
            flag = np.zeros(n, bool)
            flag[bad] = True
            draws.append((given, flag))
        rows = np.arange(n)
        for k in KNN_CANDIDATES:
            if k > len(self.ref):
                continue
            votes = self.counts(r_cal, k) if k else np.zeros_like(p_cal)
            prec = []
            for given, flag in draws:
                score = 1.0 - (votes[rows, given] + p_cal[rows, given]) / (k + 1)
                order = np.argsort(-score, kind="stable")
                tp = np.cumsum(flag[order])
                at = int(np.searchsorted(tp, math.ceil(KNN_RECALL * flag.sum())))
                prec.append(tp[at] / (at + 1))
            self.tried[k] = (float(np.mean(prec)), float(np.std(prec) / math.sqrt(len(prec))))
        # The smallest k within one standard error of the best (the one-standard-error rule):
        # a larger k is kept only when the draws say it is better, not when it is as good.
        best = max(self.tried, key=lambda k: self.tried[k][0])
        bar = self.tried[best][0] - self.tried[best][1]
        self.k = min(k for k, (m, _) in self.tried.items() if m >= bar)
        self.tried = {k: round(m, 4) for k, (m, _) in self.tried.items()}
        return self

    def probabilities(self, r, p):
        return (self.counts(r, self.k) + p) / (self.k + 1)

    def graph(self, nodes, inits, hidden, probs, out):
        onehot = np.eye(self.n_classes, dtype=np.float32)[self.labels]
        inits += [numpy_helper.from_array(self.ref.T.copy(), "knn_ref_t"),
                  numpy_helper.from_array((self.ref * self.ref).sum(1)[None, :], "knn_ref_sq"),
                  numpy_helper.from_array(np.array(-2.0, dtype=np.float32), "knn_minus_two"),
                  numpy_helper.from_array(np.array([self.k], dtype=np.int64), "knn_k"),
                  numpy_helper.from_array(onehot, "knn_onehot"),
                  numpy_helper.from_array(np.array([1], dtype=np.int64), "knn_axis"),
                  numpy_helper.from_array(np.array(1.0 / (self.k + 1), dtype=np.float32), "knn_share")]
        nodes += [helper.make_node("MatMul", [hidden, "knn_ref_t"], ["knn_dot"]),
                  helper.make_node("Mul", ["knn_dot", "knn_minus_two"], ["knn_dot2"]),
                  helper.make_node("Add", ["knn_dot2", "knn_ref_sq"], ["knn_dist"]),
                  helper.make_node("TopK", ["knn_dist", "knn_k"], ["knn_near_d", "knn_near"], axis=1, largest=0),
                  helper.make_node("Gather", ["knn_onehot", "knn_near"], ["knn_votes"], axis=0),
                  helper.make_node("ReduceSum", ["knn_votes", "knn_axis"], ["knn_counts"], keepdims=0),
                  helper.make_node("Add", ["knn_counts", probs], ["knn_sum"]),
                  helper.make_node("Mul", ["knn_sum", "knn_share"], [out])]


def scan_doubt_quantile(n_classes, target):
    """The label-score quantile of clean rows over which the window scan doubts a record of a
    class window it found poisoned (each class's bar: `set_doubt_bars`). Over it lie at most
    (1 - q) of that class's clean rows, about
    (1 - q) / n_classes of the stream's when one class is attacked: q = 1 - n_classes *
    target * SCAN_DOUBT_SHARE keeps that within SCAN_DOUBT_SHARE of the budget (0.95 for ten
    classes at 1 %), within [0.5, 0.999]."""
    return float(min(0.999, max(0.5, 1.0 - n_classes * target * SCAN_DOUBT_SHARE)))


def set_doubt_bars(scan, scores, labels, confidence):
    """The window scan's doubt bars from clean calibration label scores (`scores`, their
    `labels`): each class's bar is the lowest over which the `confidence` upper bound of the
    share of its clean rows stays within 1 - `doubt_quantile` (every higher bar's too), so an
    attacked class's clean rows over its bar cost about the share of the budget
    `scan_doubt_quantile` allows, whether the model finds the class hard or easy.
    The bound is empirical Bayes: at each candidate bar a class's count over it is binomial
    with a share drawn from a Beta across classes, whose mean and spread come from all classes'
    counts (the method of moments for the beta-binomial); the bound is the posterior's
    `confidence` quantile. Classes alike in how the model doubts them pool their rows; a class
    unlike the others, or with many rows, is bounded mostly by its own. The shared bar
    (`doubt_threshold`, for a class without statistics) is the same bound over all rows as one
    class. A bound no bar meets gives the largest score."""
    from scipy.stats import beta
    q = scan["doubt_quantile"]
    ok = np.isfinite(scores)
    if not ok.any():
        return
    s_all, lab = scores[ok], np.array([str(v) for v in labels])[ok]
    u = np.unique(s_all)  # candidate bars; a row over its bar is doubted
    if len(u) > SCAN_DOUBT_CANDIDATES:  # many rows: evenly spaced quantiles (bounded work per class)
        u = np.unique(np.quantile(s_all, np.linspace(0.0, 1.0, SCAN_DOUBT_CANDIDATES), method="lower"))
    u = u[::-1]  # largest first

    def lowest(ucb):
        bad = np.nonzero(ucb > 1 - q)[0]
        return float(u[max(bad[0] - 1, 0) if len(bad) else len(u) - 1])

    def over(rows):  # rows strictly over each candidate bar
        return (len(rows) - np.searchsorted(np.sort(rows), u, side="right")).astype(float)

    k_all = over(s_all)
    scan["doubt_threshold"] = lowest(beta.ppf(confidence, k_all + 1, np.maximum(len(s_all) - k_all, 1e-9)))
    names = [c for c in scan["classes"] if (lab == c).any()]
    if not names:
        return
    n = np.array([(lab == c).sum() for c in names], dtype=float)
    k = np.stack([over(s_all[lab == c]) for c in names])  # [classes, candidates]
    mu = k.sum(0) / n.sum()
    w = n / n.sum()
    spread = (w[:, None] * (k / n[:, None] - mu) ** 2).sum(0)  # the observed shares' variance...
    between = np.maximum(spread - mu * (1 - mu) * (w / n).sum(), 1e-12)  # ...less the binomial part
    kappa = np.clip(mu * (1 - mu) / between - 1, 0, n.sum()) if len(names) > 1 else np.zeros_like(mu)
    ucb = beta.ppf(confidence, mu * kappa + k + 1e-9, (1 - mu) * kappa + n[:, None] - k + 1e-9)
    for i, c in enumerate(names):
        scan["classes"][c]["doubt_threshold"] = lowest(ucb[i])


def scan_section(classes_, r_train, y_train, r_cal, y_cal, cal_scores, doubt_q, confidence):
    """The label model's window-scan statistics (guard-score's `scan.rs` reads them): per
    class, the mean of the trusted rows' hidden representation and a whitening projection
    (the top SCAN_DIMS eigenvectors of its covariance, shrunk by SCAN_SHRINK toward a
    multiple of the identity, divided by the square roots of their eigenvalues), so a clean
    window of the class has a second-moment matrix near the identity; the eigenvalue factor
    over the Marchenko-Pastur edge that clean calibration rows reach (90th percentile over the
    classes, times 1.1, within [1.3, 3]); and the doubt bars, shared and per class, bounding
    the `doubt_q` quantile of the calibration rows' label scores (`set_doubt_bars`), applied
    inside a class window the scan found poisoned.
    `r_train`, `r_cal`: the label graph's `hidden` output on the training and calibration rows."""
    classes, null = {}, []
    for c in classes_:
        rc = r_train[y_train == c]
        if len(rc) < 3:
            continue
        mean = rc.mean(0)
        cov = np.cov(rc.T) if len(rc) > 1 else np.eye(rc.shape[1])
        cov = (1 - SCAN_SHRINK) * cov + SCAN_SHRINK * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        w, v = np.linalg.eigh(cov)
        top = np.argsort(w)[::-1][:SCAN_DIMS]
        proj = (v[:, top] / np.sqrt(np.maximum(w[top], 1e-12))).T  # [k, H]
        classes[str(c)] = dict(mean=[float(f"{x:.6g}") for x in mean],
                               projection=[[float(f"{x:.6g}") for x in row] for row in proj])
        zc = (r_cal[y_cal == c] - mean) @ proj.T
        if len(zc) >= 10:
            lam = np.linalg.eigvalsh(zc.T @ zc / len(zc))[-1]
            null.append(lam / (1 + math.sqrt(zc.shape[1] / len(zc))) ** 2)
    factor = float(min(3.0, max(1.3, 1.1 * np.quantile(null, 0.9)))) if null else 2.0
    scan = dict(hidden_output="hidden", dims=SCAN_DIMS, factor=factor, min_cluster=SCAN_MIN_CLUSTER,
                min_class_rows=SCAN_MIN_CLASS_ROWS, doubt_quantile=doubt_q, doubt_threshold=1.0,
                null_factors=[round(float(x), 4) for x in sorted(null)], classes=classes)
    set_doubt_bars(scan, cal_scores, y_cal, confidence)
    return scan


class Squeezers:
    """The adversarial role's squeezers over the encoded row `h`: which columns hold tensor
    elements (normalised to [0, 1] by the encoder) and, for tensors of rank >= 2, where they
    sit and their grid: the last two axes, or the two before the last with `"channels": "last"`
    (median smoothing then works per channel)."""

    def __init__(self, enc):
        self.enc = enc
        pos = {c: i for i, c in enumerate(enc.cont)}  # input column -> encoded column
        self.mask = np.zeros(enc.dim)
        self.grids = []  # (first encoded column, element count, height, width, channels last: their count, else 0)
        c = 0
        schema_shapes = enc.layout.shapes
        for kind, name, _, size in enc.layout.parts:
            if kind == "tensor":
                start = pos[c]
                self.mask[start:start + size] = 1.0
                shape = schema_shapes[name]
                if enc.layout.channels_last[name] and len(shape) >= 3 and shape[-2] >= 2 and shape[-3] >= 2:
                    self.grids.append((start, size, int(shape[-3]), int(shape[-2]), int(shape[-1])))
                elif len(shape) >= 2 and shape[-1] >= 2 and shape[-2] >= 2:
                    self.grids.append((start, size, int(shape[-2]), int(shape[-1]), 0))
            c += size

    def image_grids(self):
        """The grids at least IMAGE_MIN_SIDE on each side: the images."""
        return [g for g in self.grids if g[2] >= IMAGE_MIN_SIDE and g[3] >= IMAGE_MIN_SIDE]

    def bits(self, h, b):
        m = float((1 << b) - 1)
        q = np.round(np.clip(h, 0.0, 1.0) * m) / m
        return h + self.mask * (q - h)

    def median(self, h):
        out = h.copy()
        for start, size, hh, ww, last in self.grids:
            im = h[:, start:start + size].reshape((-1, hh, ww) + ((last,) if last else ()))
            p = np.pad(im, ((0, 0), (0, 1), (0, 1)) + (((0, 0),) if last else ()), mode="edge")
            st = np.stack([p[:, i:i + hh, j:j + ww] for i in range(2) for j in range(2)], -1)
            out[:, start:start + size] = np.sort(st, -1)[..., 1:3].mean(-1).reshape(len(h), size)
        return out

    def candidates(self):
        out = [(f"bit depth {b}", ("bits", b)) for b in range(1, 6)]
        if self.grids:
            out.append(("median 2x2", ("median", 2)))
        return out

    def apply(self, h, spec):
        return self.bits(h, spec[1]) if spec[0] == "bits" else self.median(h)

    def reform(self, h, ae):
        """The reformer: the anomaly autoencoder's reconstruction of the tensor columns,
        clipped to [0, 1] (MagNet, Meng and Chen 2017)."""
        return h + self.mask * (np.clip(ae.predict(h), 0.0, 1.0) - h)

    def graph(self, nodes, inits, h, specs):
        """One encoded row per squeezer, named h_sq{k}."""
        inits += [numpy_helper.from_array(self.mask.astype(np.float32), "sq_mask"),
                  numpy_helper.from_array(np.array(0.0, dtype=np.float32), "sq_zero"),
                  numpy_helper.from_array(np.array(1.0, dtype=np.float32), "sq_one")]
        names = []
        for k, spec in enumerate(specs):
            out = f"h_sq{k}"
            if spec[0] == "bits":
                m = float((1 << spec[1]) - 1)
                inits.append(numpy_helper.from_array(np.array(m, dtype=np.float32), f"sq{k}_levels"))
                nodes += [helper.make_node("Clip", [h, "sq_zero", "sq_one"], [f"sq{k}_c"]),
                          helper.make_node("Mul", [f"sq{k}_c", f"sq{k}_levels"], [f"sq{k}_s"]),
                          helper.make_node("Round", [f"sq{k}_s"], [f"sq{k}_r"]),
                          helper.make_node("Div", [f"sq{k}_r", f"sq{k}_levels"], [f"sq{k}_q"]),
                          helper.make_node("Sub", [f"sq{k}_q", h], [f"sq{k}_d"]),
                          helper.make_node("Mul", [f"sq{k}_d", "sq_mask"], [f"sq{k}_md"]),
                          helper.make_node("Add", [h, f"sq{k}_md"], [out])]
            else:
                cur = h
                for g, (start, size, hh, ww, last) in enumerate(self.grids):
                    t = f"sq{k}g{g}"
                    i64 = lambda a, n: inits.append(numpy_helper.from_array(np.array(a, dtype=np.int64), n))
                    i64([start], f"{t}_s"), i64([start + size], f"{t}_e"), i64([1], f"{t}_ax")
                    i64([0], f"{t}_zero"), i64([1 << 62], f"{t}_end"), i64([-1, hh, ww] + ([last] if last else []), f"{t}_shape")
                    i64([0, 0, 0, 0, 1, 1] if not last else [0, 0, 0, 0, 0, 1, 1, 0], f"{t}_pads")
                    i64([-1, size], f"{t}_flat"), i64([3], f"{t}_k")
                    i64([1], f"{t}_one"), i64([3], f"{t}_three"), i64([-1], f"{t}_last")
                    nodes += [helper.make_node("Slice", [cur, f"{t}_zero", f"{t}_s", f"{t}_ax"], [f"{t}_left"]),
                              helper.make_node("Slice", [cur, f"{t}_s", f"{t}_e", f"{t}_ax"], [f"{t}_mid"]),
                              helper.make_node("Slice", [cur, f"{t}_e", f"{t}_end", f"{t}_ax"], [f"{t}_right"]),
                              helper.make_node("Reshape", [f"{t}_mid", f"{t}_shape"], [f"{t}_img"]),
                              helper.make_node("Pad", [f"{t}_img", f"{t}_pads"], [f"{t}_pad"], mode="edge")]
                    shifted = []
                    for i in range(2):
                        for j in range(2):
                            n = f"{t}_p{i}{j}"
                            i64([i, j], n + "_b"), i64([i + hh, j + ww], n + "_f"), i64([1, 2], n + "_a")
                            nodes += [helper.make_node("Slice", [f"{t}_pad", n + "_b", n + "_f", n + "_a"], [n]),
                                      helper.make_node("Unsqueeze", [n, f"{t}_last"], [n + "_u"])]
                            shifted.append(n + "_u")
                    nodes += [helper.make_node("Concat", shifted, [f"{t}_four"], axis=-1),
                              helper.make_node("TopK", [f"{t}_four", f"{t}_k"], [f"{t}_top", f"{t}_ti"], axis=-1),
                              helper.make_node("Slice", [f"{t}_top", f"{t}_one", f"{t}_three", f"{t}_last"], [f"{t}_mm"]),
                              helper.make_node("ReduceMean", [f"{t}_mm"], [f"{t}_med"], axes=[-1], keepdims=0),
                              helper.make_node("Reshape", [f"{t}_med", f"{t}_flat"], [f"{t}_medf"]),
                              helper.make_node("Concat", [f"{t}_left", f"{t}_medf", f"{t}_right"], [f"{t}_out"], axis=1)]
                    cur = f"{t}_out"
                nodes.append(helper.make_node("Identity", [cur], [out]))
            names.append(out)
        return names


def shifted_copies(sq, h, y):
    """The label MLP's training rows for image tensors: each row as it is and shifted by one
    element up, down, left and right (SHIFTS) on every image grid (Squeezers.image_grids), the
    vacated edge repeating its neighbour. An MLP sees each pixel as its
    own input and learns no translation invariance from a few thousand rows; a digit drawn
    one pixel over is still the same digit (the augmentation of LeCun et al. 1998 and of
    most image training). Rows without such a grid are returned as they are."""
    grids = sq.image_grids()
    if not grids or len(h) == 0:
        return h, y
    out = [h]
    for dy, dx in SHIFTS:
        c = h.copy()
        for start, size, hh, ww, last in grids:
            im = h[:, start:start + size].reshape((-1, hh, ww) + ((last,) if last else ()))
            sh = np.roll(im, (dy, dx), axis=(1, 2))
            if dy:
                edge = 0 if dy > 0 else hh - 1
                sh[:, edge] = im[:, edge]
            if dx:
                edge = 0 if dx > 0 else ww - 1
                sh[:, :, edge] = im[:, :, edge]
            c[:, start:start + size] = sh.reshape(len(h), size)
        out.append(c)
    return np.concatenate(out), np.concatenate([y] * len(out))


def class_indices(labels, classes):
    """Each label's index in `classes` (-1 for a label the model does not know)."""
    classes = list(classes)
    return np.array([classes.index(c) if c in classes else -1 for c in labels])


def label_scores(p, labels, classes):
    """The guard's label score, 1 - p(given label), from probabilities `p` [N, C]: 1 for a
    label the model does not know, -inf without a label (the guard scores nothing then)."""
    yi = class_indices(labels, classes)
    q = np.where(yi >= 0, p[np.arange(len(yi)), np.maximum(yi, 0)], 0.0)
    return np.where(labels == "", -np.inf, 1.0 - q)


def squeeze_rises(lp, yi):
    """Per row and squeezer, the rise of log p(class) from `log_probabilities` [N, 1 + S, C]
    (each floored at LOG_FLOOR), the class being each row's given one (`yi`), else (-1) the
    original prediction: [N, S]."""
    lp = np.maximum(lp, LOG_FLOOR)
    c = np.where(yi >= 0, yi, lp[:, 0, :].argmax(1))
    r = np.arange(len(lp))
    return lp[r, 1:, c] - lp[r, 0, c][:, None]


def squeeze_scores(lp, yi):
    """The adversarial score with one threshold for every squeezer: the largest rise
    (`squeeze_rises`)."""
    return squeeze_rises(lp, yi).max(1)


def adversarial_graph(clf, enc, sq, specs, reformer=None):
    nodes, inits = [], []
    h = enc.graph(nodes, inits)
    branches = [h] + sq.graph(nodes, inits, h, specs)
    if reformer is not None:  # (autoencoder, activation): its reconstruction is one more copy
        ae, act = reformer
        rec = dense_layers(nodes, inits, h, ae.coefs_, ae.intercepts_, act, "ref")
        nodes += [helper.make_node("Clip", [rec, "sq_zero", "sq_one"], ["ref_c"]),
                  helper.make_node("Sub", ["ref_c", h], ["ref_d"]),
                  helper.make_node("Mul", ["ref_d", "sq_mask"], ["ref_m"]),
                  helper.make_node("Add", [h, "ref_m"], ["h_ref"])]
        branches.append("h_ref")
    nodes.append(helper.make_node("Concat", branches, ["h_all"], axis=0))
    logits = dense_layers(nodes, inits, "h_all", clf.coefs_, clf.intercepts_, clf.activation, "adv")
    logits = class_logits(nodes, logits, clf, "adv")
    c = len(clf.classes_)
    inits.append(numpy_helper.from_array(np.array([len(branches), -1, c], dtype=np.int64), "adv_shape"))
    nodes += [helper.make_node("LogSoftmax", [logits], ["adv_lp"], axis=1),
              helper.make_node("Reshape", ["adv_lp", "adv_shape"], ["adv_lp3"]),
              helper.make_node("Transpose", ["adv_lp3"], ["log_probabilities"], perm=[1, 0, 2])]
    return helper.make_graph(
        nodes, "guard_adversarial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", enc.layout.width])],
        [helper.make_tensor_value_info("log_probabilities", TensorProto.FLOAT, ["N", len(branches), c])],
        inits)


class Statistics:
    """A role whose score is the largest of several statistics, each over its own threshold
    (the anomaly role's image statistics, the label role's classifier and neighbour vote, the
    adversarial role's squeezers and autoencoder). `members`: statistic -> calibration values,
    each a member of the joint budget. `finish(thresholds, meta)`, with the members' thresholds
    in order (at least `floor`): records them in the role's metadata and returns the role's
    calibration scores and the fixture's new fields."""

    def __init__(self, members, floor, finish):
        self.members, self.floor, self.finish = members, floor, finish


def union_bound(cuts, n, confidence):
    """The `confidence` quantile of the union's FPR when each member's threshold is its
    (m+1)-th largest of n exchangeable calibration scores (m in `cuts`): each member's FPR is
    distributed Beta(m + 1, n - m), and the union's is at most their sum."""
    from scipy.stats import beta
    rng = np.random.default_rng(12345)  # the same draws for every cut: comparable bounds
    total = sum(beta.rvs(m + 1, max(1, n - m), size=20_000, random_state=rng) for m in cuts)
    return float(np.quantile(total, confidence))


def rows_needed(members, target, confidence):
    """The fewest calibration rows whose largest scores bound `members` statistics' union by
    `target` with `confidence` (`union_bound` with every cut at 0): what a sample that cannot
    meet the budget would need."""
    lo, hi = 1, 2
    while union_bound([0] * members, hi, confidence) > target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if union_bound([0] * members, mid, confidence) > target else (lo, mid)
    return hi


def joint_thresholds(cal, target, confidence, groups=None):
    """Per member, a threshold such that a clean record fired on by any member is within the
    budget with the stated confidence (module docstring). `cal`: member -> calibration scores
    (same rows). `groups`: the members of each role (default one each); the roles share the
    budget evenly, and a role's members take its turns in rotation. Returns (thresholds, union
    exceedances on the calibration rows, bound, met)."""
    roles = list(cal)
    n = len(cal[roles[0]])
    desc = {r: np.sort(np.nan_to_num(np.asarray(cal[r], dtype=np.float64), nan=np.inf))[::-1] for r in roles}

    def bound(cut):
        return union_bound([cut[r] for r in roles], n, confidence)

    cut = {r: 0 for r in roles}
    groups = groups or [[r] for r in roles]
    turn = [0] * len(groups)
    met = bound(cut) <= target
    moved = met
    while moved:
        moved = False
        for g, members in enumerate(groups):  # one step per role in turn: the roles share the budget evenly
            for k in range(len(members)):  # the role's next member that can still step
                r = members[(turn[g] + k) % len(members)]
                if cut[r] + 1 >= n:
                    continue
                cut[r] += 1
                if bound(cut) <= target:
                    moved = True
                    turn[g] = (turn[g] + k + 1) % len(members)
                    break
                cut[r] -= 1
    thr = {r: float(desc[r][cut[r]]) for r in roles}
    u = int(np.any([np.asarray(cal[r]) > thr[r] for r in roles], axis=0).sum())
    return thr, u, bound(cut), met


def model_of(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ingest-guard train")
    model.ir_version = 8
    return model


def graph_bytes(graph):
    return model_of(graph).SerializeToString()


def save(graph, path):
    model = model_of(graph)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def pow2(x):
    return 1 << max(0, math.ceil(math.log2(max(1.0, x))))


def iterations(n, d):
    return int(min(300, max(30, round(1e8 / max(1, n * d)))))


def main():
    ap = argparse.ArgumentParser(description="ingest-guard's training backend (see the module docstring)")
    ap.add_argument("--schema", required=True)
    ap.add_argument("--input", required=True, help="trusted records, JSON Lines")
    ap.add_argument("--out", required=True)
    ap.add_argument("--roles", default="auto", help="anomaly,label or auto (label when the schema has one)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--target-fpr", type=float, default=0.01)
    ap.add_argument("--fpr-confidence", type=float, default=0.9)
    ap.add_argument("--label-model", choices=("mlp", "conv", "svm"), default="conv",
                    help="conv: for rows with an image tensor, the MLP averaged with a ConvBranch, else the MLP; "
                         "mlp: the MLP alone; svm: an RBF SVM's probabilities (SvmMember)")
    ap.add_argument("--augment", choices=("none", "shifts"), default="none",
                    help="shifts: the label MLP on rows with an image grid also trains on each row shifted by "
                         "one element (shifted_copies); none: the rows as they are")
    ap.add_argument("--neighbours", default="auto",
                    help="label model: the neighbour vote's k (auto: chosen on the calibration rows; 0: none)")
    ap.add_argument("--reformer", choices=("auto", "on", "off"), default="auto",
                    help="adversarial: the anomaly role's image autoencoder is one more squeezer (MagNet), with its own "
                         "threshold; auto: where the calibration rows can bound the budget with it")
    a = ap.parse_args()
    if a.neighbours != "auto" and not (a.neighbours.isdigit()):
        fail(f"--neighbours {a.neighbours}: give auto or a count of neighbours (0: none)")
    if not 0.0 < a.target_fpr < 0.5:
        fail(f"--target-fpr {a.target_fpr} is outside (0, 0.5)")
    if not 0.0 < a.fpr_confidence < 1.0:
        fail(f"--fpr-confidence {a.fpr_confidence} is outside (0, 1)")
    schema = json.load(open(a.schema))
    lines = [l for l in open(a.input, "rb").read().splitlines() if l.strip()]
    rows = []
    for n, l in enumerate(lines):
        try:
            rows.append(json.loads(l))
        except ValueError as e:
            fail(f"{a.input} line {n + 1}: {e}")
    b = np.array([bucket(i, a.seed) for i in range(len(rows))])
    train, calib = np.where(b >= 2)[0], np.where(b < 2)[0]
    if len(train) < 50 or len(calib) < 20:
        fail(f"{len(rows)} trusted rows are too few (need about 100 or more: 80 % train, 20 % calibrate)")
    layout = Layout(schema, [rows[i] for i in train])
    x = layout.matrix(rows)
    y = layout.labels(rows)
    auto = a.roles == "auto"
    roles = [r for r in a.roles.split(",") if r] if not auto else (
        ["anomaly"] + (["label"] if y is not None else []) + (["adversarial"] if y is not None and layout.has_tensor else []))
    for r in roles:
        if r not in ("anomaly", "label", "adversarial"):
            fail(f"unknown role {r!r} (anomaly, label, adversarial)")
    for r in ("label", "adversarial"):
        if r in roles:
            if y is None:
                fail(f"--roles {r}: the schema's x-guard section names no label")
            if len(set(y[train]) - {""}) < 2:
                if not auto:
                    fail(f"--roles {r}: the trusted rows hold one class only")
                roles.remove(r)
    if "adversarial" in roles and not layout.has_tensor:
        fail("--roles adversarial: feature squeezing needs a tensor in the schema's x-guard section")
    roles = [r for r in ("anomaly", "label", "adversarial") if r in roles]  # the anomaly autoencoder first: the adversarial role reuses it
    enc = Encoder(layout, x[train])
    if a.label_model == "conv" and "label" in roles and layout.has_tensor and ConvBranch.grid_of(Squeezers(enc)):
        try:
            import jax  # noqa: F401  (trains the convolutional member; fail before any training)
        except ImportError as e:
            fail(f"--label-model conv (the default for rows with an image tensor) needs jax and jaxlib in this "
                 f"Python ({sys.executable}): {e}; scripts/setup.sh installs them into .tools/venv-train, "
                 "or train the MLP alone with --label-model mlp")
    h = enc.numpy(x)
    os.makedirs(a.out, exist_ok=True)
    sha = hashlib.sha256(b"".join(l + b"\n" for l in lines)).hexdigest()
    base = dict(format=1, schema_id=layout.schema_id, inputs=layout.inputs(), width=layout.width, input_name="x",
                levels=layout.levels, trusted_sha256=sha, trusted_rows=len(rows), train_rows=int(len(train)),
                calibration_rows=int(len(calib)), seed=a.seed,
                split="bucket(i, seed) < 2 of the input rows calibrate, the rest train (scripts/train_models.py)",
                versions=dict(sklearn=sklearn.__version__, onnx=onnx.__version__, onnxruntime=ort.__version__,
                              numpy=np.__version__, opset=OPSET))
    k = 4 if layout.width < 100 else 2
    clean = calib[~np.isnan(x[calib]).any(axis=1)]  # JSON has no NaN
    if y is not None:  # a fixture row's label score must be a number too
        clean = clean[y[clean] != ""]
    # Rows without a label teach the classifiers nothing; the guard does not score their label.
    train_l, calib_l = (train, calib) if y is None else (train[y[train] != ""], calib[y[calib] != ""])
    fixture_rows = clean[: 4 * k]
    report, trained = {}, {}
    image_ae = None  # (autoencoder, activation) of the anomaly role on rows with an image tensor
    stats = {}  # role -> Statistics: the roles whose score is several statistics, each over its own threshold
    d, n = enc.dim, len(train)
    for role in list(roles):
        iters = max(LABEL_MIN_ITERATIONS, iterations(n, d)) if role == "label" else iterations(n, d)
        extra = {}
        if role == "anomaly":
            if layout.has_tensor:
                hidden, act = (2 * pow2(math.sqrt(d)),), "relu"
            else:
                w = min(256, max(16, pow2(d)))
                hidden, act = (w, max(2, round(0.4 * d)), w), "tanh"
            model = MLPRegressor(hidden_layer_sizes=hidden, activation=act, max_iter=iters, random_state=a.seed)
            model.fit(h[train], h[train])
            err_scale = None if layout.has_tensor else feature_errors(model, enc, h[train])
            graph = autoencoder_graph(model, enc, act, None, err_scale)
            if layout.has_tensor:  # each statistic as it is; scaled by its threshold once calibrated
                stat_graph = autoencoder_graph(model, enc, act, (1.0, 1.0, 1.0), stat_outputs=True)
                stat_sess = ort.InferenceSession(graph_bytes(stat_graph), providers=["CPUExecutionProvider"])
                stats_cal = stat_sess.run(["top_rel", "bg_rel", "all_rel"], {"x": x[calib].astype(np.float32)})
                image_ae = (model, act)

                def finish_anomaly(scales, meta, model=model, act=act):
                    # The anomaly graph again, each statistic divided by its threshold.
                    sess = save(autoencoder_graph(model, enc, act, tuple(scales)), os.path.join(a.out, "anomaly.onnx"))
                    report["anomaly"]["bytes"] = os.path.getsize(os.path.join(a.out, "anomaly.onnx"))
                    meta.update(statistic_thresholds=dict(zip(IMAGE_STATISTICS, scales)))
                    outs = sess.run(None, {"x": x[fixture_rows].astype(np.float32)})
                    return (sess.run(None, {"x": x[calib].astype(np.float32)})[0].astype(np.float64),
                            dict(outputs={o.name: v.tolist() for o, v in zip(sess.get_outputs(), outs)},
                                 scores=outs[0].astype(float).tolist()))
                stats["anomaly"] = Statistics({f"anomaly {k}": v.astype(np.float64) for k, v in zip(IMAGE_STATISTICS, stats_cal)},
                                              1e-12, finish_anomaly)
        else:
            hidden = (min(256, max(16, 4 * pow2(math.sqrt(d)))),)
            alpha = 1.0 if layout.has_tensor and role == "label" else 1e-4
            hx, hy = h[train_l], y[train_l]
            if role == "label" and a.augment == "shifts":
                hx, hy = shifted_copies(Squeezers(enc), hx, hy)
                if len(hx) > len(train_l):  # the same row visits as without the copies
                    iters = max(SHIFT_MIN_ITERATIONS, iters * len(train_l) // len(hx))
                    extra = dict(augment=dict(shifts=SHIFTS, rows=len(hx), iterations=iters))
            model = MLPClassifier(hidden_layer_sizes=hidden, max_iter=iters, alpha=alpha, random_state=a.seed)
            model.fit(hx, hy)
        conv = svm = None
        if role == "label":
            grid = ConvBranch.grid_of(Squeezers(enc)) if a.label_model == "conv" and layout.has_tensor else None
            if grid is not None:
                conv = ConvBranch(grid, enc.dim).fit(h[train_l], y[train_l], model.classes_, a.seed)
                extra["conv"] = dict(channels=list(CONV_CHANNELS), hidden=CONV_HIDDEN, epochs=conv.epochs,
                                     grid=[conv.hh, conv.ww], in_channels=conv.channels,
                                     channels_last=conv.channels_last, jax=conv.jax_version)
            if a.label_model == "svm":
                svm = SvmMember(a.seed).fit(h[train_l], y[train_l], model.classes_)
                extra["svm"] = dict(kernel="rbf", C=1.0, gamma=svm.gamma, support_vectors=int(len(svm.sv)))
            graph = classifier_graph(model, enc, conv, svm=svm)
        elif role == "adversarial":
            sq = Squeezers(enc)
            acc0 = float(np.mean(model.predict(h[calib_l]) == y[calib_l]))
            kept, tried = [], {}
            for name, spec in sq.candidates():
                acc = float(np.mean(model.predict(sq.apply(h[calib_l], spec)) == y[calib_l]))
                tried[name] = round(acc, 4)
                if acc0 - acc <= ACCURACY_DROP and not (spec[0] == "bits" and sum(k[1][0] == "bits" for k in kept) >= 2):
                    kept.append((name, spec))
            if not kept:
                print(f"train: adversarial: no squeezer keeps the accuracy within {ACCURACY_DROP} of {acc0:.4f} "
                      f"({tried}); role skipped", file=sys.stderr)
                roles.remove(role)
                continue
            # The anomaly role's autoencoder as one more squeezer, with a threshold of its own.
            # `auto`: only where the calibration rows can still bound the budget with one more
            # statistic (every statistic's threshold below its largest calibration score);
            # where they cannot, each statistic adds a tail of its own to the stream's FPR.
            reformer = image_ae[:2] if image_ae is not None and a.reformer != "off" else None
            declined = None
            if a.reformer == "on" and reformer is None:
                print("train: adversarial: --reformer needs the anomaly role's image autoencoder (train the anomaly role "
                      "on rows with an image tensor); the squeezers are the bit-depth and median ones", file=sys.stderr)
            if a.reformer == "auto" and reformer is not None:
                members = (sum(len(stats[r].members) if r in stats else 1 for r in trained)
                           + 2)  # the other roles' statistics, and the squeezers and the autoencoder
                b0 = union_bound([0] * members, len(calib), a.fpr_confidence)
                if b0 > a.target_fpr:
                    declined = (f"{len(calib)} calibration rows cannot bound {members} statistics by {a.target_fpr} "
                                f"(bound {b0:.4f}); --reformer on forces it")
                    print(f"train: adversarial: no autoencoder squeezer: {declined}", file=sys.stderr)
                    reformer = None
            if reformer is not None:
                tried["autoencoder"] = round(float(np.mean(model.predict(sq.reform(h[calib_l], reformer[0])) == y[calib_l])), 4)
            graph = adversarial_graph(model, enc, sq, [k[1] for k in kept], reformer)
            probe = calib_l[:256]
            twin = np.stack([model.predict_proba(h[probe])] + [model.predict_proba(sq.apply(h[probe], k[1])) for k in kept]
                            + ([model.predict_proba(sq.reform(h[probe], reformer[0]))] if reformer else []), 1)
            got = np.exp(ort.InferenceSession(graph_bytes(graph), providers=["CPUExecutionProvider"])
                         .run(None, {"x": x[probe].astype(np.float32)})[0])
            if not np.allclose(got, twin, atol=1e-3):  # the squeezers in the graph are the ones chosen
                fail(f"adversarial: the exported squeezers differ from numpy's by {np.abs(got - twin).max():.2e}")
            extra = dict(squeezers=[k[0] for k in kept] + (["autoencoder"] if reformer else []),
                         squeezer_accuracy=dict(tried, original=round(acc0, 4)))
            if declined:
                extra["reformer_declined"] = declined
        path = os.path.join(a.out, f"{role}.onnx")
        sess = save(graph, path)
        if conv is not None:  # the exported ensemble is the trained one
            probe = train_l[:256]
            want = 0.5 * (conv.check(h[probe].astype(np.float32)) + model.predict_proba(h[probe]))
            got = sess.run(["probabilities"], {"x": x[probe].astype(np.float32)})[0]
            if not np.allclose(got, want, atol=1e-4):
                fail(f"label: the exported graph differs from the trained models by {np.abs(got - want).max():.2e}")
        if svm is not None:  # the graph's coupling is numpy's, and libsvm's to its own tolerance
            probe = calib_l[:256]
            got = sess.run(["probabilities"], {"x": x[probe].astype(np.float32)})[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                twin, lib = svm.probabilities(h[probe]), svm.svc.predict_proba(h[probe])
            if not (np.allclose(got, twin, atol=1e-3) and np.allclose(twin, lib, atol=1e-2)):
                fail(f"label: the exported SVM differs from numpy's coupling by {np.abs(got - twin).max():.2e} "
                     f"and that from libsvm's by {np.abs(twin - lib).max():.2e}")

        if role == "label" and a.neighbours != "0":
            classes = list(model.classes_)
            yi = class_indices(y, classes)
            hid = sess.run(["hidden"], {"x": x[train_l].astype(np.float32)})[0]
            nb = Neighbours(hid, yi[train_l], len(classes), a.seed)
            p_cal, r_cal = sess.run(["probabilities", "hidden"], {"x": x[calib_l].astype(np.float32)})
            if a.neighbours == "auto":
                nb.choose(r_cal, p_cal.astype(np.float64), yi[calib_l], a.seed)
            else:
                nb.k = min(int(a.neighbours), len(nb.ref))
            extra["neighbours"] = dict(k=nb.k, reference_rows=int(len(nb.ref)), tried=nb.tried)
            print(f"train: label: neighbours k={nb.k} over {len(nb.ref)} rows (precision at recall {KNN_RECALL} of "
                  f"simulated flips on calibration rows: {nb.tried})", file=sys.stderr)
            if nb.k > 0:
                sess = save(classifier_graph(model, enc, conv, nb, svm), path)
                probe = calib_l[:512]
                p, r, pc = sess.run(["probabilities", "hidden", "classifier_probabilities"], {"x": x[probe].astype(np.float32)})
                want = nb.probabilities(r, pc)
                off = np.abs(p - want).max(1) > 1e-4
                # A tie at the k-th distance may fall either way; any other difference is a bug.
                if np.any(off & ~nb.tied(r)):
                    fail(f"label: the exported neighbour vote differs from numpy's on {int((off & ~nb.tied(r)).sum())} "
                         f"of {len(probe)} rows without a tie at the k-th distance")

        def scores(idx, role=role, sess=sess, model=model):
            outs = sess.run(None, {"x": x[idx].astype(np.float32)})
            if role == "anomaly":
                return outs[0].astype(np.float64), outs
            if role == "adversarial":
                return squeeze_scores(outs[0].astype(np.float64), class_indices(y[idx], model.classes_)), outs
            return label_scores(outs[0], y[idx], model.classes_), outs

        cal, _ = scores(calib)
        if role == "label" and "classifier_probabilities" in [o.name for o in sess.get_outputs()]:
            def classifier_scores(idx, sess=sess, model=model):
                p = sess.run(["classifier_probabilities"], {"x": x[idx].astype(np.float32)})[0]
                return label_scores(p, y[idx], model.classes_)
            # The label role's two statistics: the score is the larger over its own threshold
            # (guard-score's ModelMeta::label_score).
            c_cal = classifier_scores(calib)

            def finish_label(ts, meta, c=(c_cal, cal), f=(classifier_scores(fixture_rows), scores(fixture_rows)[0])):
                meta.update(label_statistics=dict(classifier=ts[0], neighbours=ts[1]))
                with np.errstate(invalid="ignore"):
                    cal = np.maximum(np.nan_to_num(c[0], nan=np.inf) / ts[0], np.nan_to_num(c[1], nan=np.inf) / ts[1])
                if "scan" in meta:
                    set_doubt_bars(meta["scan"], cal, y[calib], a.fpr_confidence)
                return cal, dict(scores=np.maximum(f[0] / ts[0], f[1] / ts[1]).astype(float).tolist())
            stats["label"] = Statistics({"label classifier": c_cal, "label neighbours": cal},
                                        1e-12, finish_label)

        if role == "adversarial" and "autoencoder" in extra.get("squeezers", []):
            def rises(idx, sess=sess, model=model):
                lp = sess.run(None, {"x": x[idx].astype(np.float32)})[0].astype(np.float64)
                return squeeze_rises(lp, class_indices(y[idx], model.classes_))
            # The bit-depth and median squeezers share a threshold; the autoencoder, whose
            # clean rises run higher, has its own: two members of the joint budget (below).
            r_cal, r_fix = rises(calib), rises(fixture_rows)

            def finish_adversarial(ts, meta, r_cal=r_cal, r_fix=r_fix):
                # guard-score's squeeze_score with `squeezer_thresholds`: the largest rise over
                # its squeezer's threshold.
                scales = np.asarray([ts[0]] * (len(meta["squeezers"]) - 1) + [ts[1]])
                meta.update(squeezer_thresholds=scales.tolist())
                with np.errstate(invalid="ignore"):
                    return (r_cal / scales).max(1), dict(scores=(r_fix / scales).max(1).astype(float).tolist())
            with np.errstate(invalid="ignore"):
                stats["adversarial"] = Statistics({"adversarial squeezers": r_cal[:, :-1].max(1),
                                                   "adversarial autoencoder": r_cal[:, -1]}, 1e-6, finish_adversarial)

        def hidden_rows(idx, sess=sess, model=model, conv=conv):
            if conv is None:
                return hidden_of(model, h[idx])
            return sess.run(["hidden"], {"x": x[idx].astype(np.float32)})[0].astype(np.float64)
        meta = dict(base, role=role, size=dict(hidden=list(hidden), iterations=iters, encoded_width=d), **extra)
        if role == "anomaly":
            meta.update(score_output="score", feature_error_output="feature_error")
        elif role == "label":
            if extra.get("neighbours", {}).get("k", 0) > 0:
                meta.update(classifier_probabilities_output="classifier_probabilities")
            meta.update(probabilities_output="probabilities", classes=[str(c) for c in model.classes_],
                        scan=scan_section(model.classes_, hidden_rows(train_l), y[train_l], hidden_rows(calib), y[calib], cal,
                                         scan_doubt_quantile(len(model.classes_), a.target_fpr), a.fpr_confidence))
        else:
            meta.update(log_probabilities_output="log_probabilities", classes=[str(c) for c in model.classes_])
        trained[role] = (meta, np.nan_to_num(cal, nan=np.inf))
        s, outs = scores(fixture_rows)
        fixture = dict(role=role, row_index=[int(i) for i in fixture_rows], inputs=x[fixture_rows].astype(np.float32).tolist(),
                       labels=(y[fixture_rows].tolist() if y is not None else []),
                       outputs={o.name: v.tolist() for o, v in zip(sess.get_outputs(), outs)},
                       scores=s.astype(float).tolist())
        with open(os.path.join(a.out, f"{role}.fixture.json"), "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
        report[role] = dict(hidden=list(hidden), iterations=iters, bytes=os.path.getsize(path), **extra)
    if not trained:
        fail("no model was trained")
    # Each role shares the budget evenly (joint_thresholds); a role with statistics spends its
    # share on them in turn, and its score is then their largest over each one's threshold, so
    # its own threshold is 1. The plain roles come first, then the others in training order.
    stats = {r: st for r, st in stats.items() if r in trained}
    members, groups = {}, []
    for r, (_, c) in trained.items():
        if r not in stats:
            members[r] = c
            groups.append([r])
    for st in stats.values():
        members.update({k: np.nan_to_num(v, nan=np.inf) for k, v in st.members.items()})
        groups.append(list(st.members))
    thresholds, u, bound, met = joint_thresholds(members, a.target_fpr, a.fpr_confidence, groups)
    for role, st in stats.items():
        ts = [max(thresholds.pop(k), st.floor) for k in st.members]
        thresholds[role] = 1.0
        meta = trained[role][0]
        cal, update = st.finish(ts, meta)
        trained[role] = (meta, np.nan_to_num(cal, nan=np.inf))
        path = os.path.join(a.out, f"{role}.fixture.json")
        with open(path) as f:
            fixture = json.load(f)
        fixture.update(update)
        with open(path, "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
    needed = None if met else rows_needed(len(members), a.target_fpr, a.fpr_confidence)
    if not met:
        print(f"train: {len(calib)} calibration rows cannot bound the false-positive rate by {a.target_fpr} with "
              f"confidence {a.fpr_confidence}: each threshold is the largest calibration score (bound {bound:.4f}; "
              f"{len(members)} statistics need about {needed})", file=sys.stderr)
    for role, (meta, cal) in trained.items():
        t = thresholds[role]
        meta.update(threshold=t, target_fpr=a.target_fpr, fpr_confidence=a.fpr_confidence,
                    fpr_bound=bound, budget_met=met, calibration_fpr=u / len(cal),
                    role_calibration_fpr=float(np.mean(cal > t)),
                    calibration=("joint over the roles: each role's threshold is its (m+1)-th largest calibration "
                                 "score, the cuts m lowered in turn while the fpr_confidence quantile of the sum of "
                                 "Beta(m + 1, n - m) stays within target_fpr (scripts/train_models.py)"))
        scan = meta.pop("scan", None)
        text = json.dumps(meta, indent=2)
        if scan is not None:  # compact: its per-class matrices would be a line per number
            text = text[:-2] + ',\n  "scan": ' + json.dumps(scan, separators=(",", ":")) + "\n}"
        with open(os.path.join(a.out, f"{role}.json"), "w") as f:
            f.write(text + "\n")
        report[role].update(threshold=t, role_calibration_fpr=meta["role_calibration_fpr"])
    print(json.dumps(dict(schema_id=layout.schema_id, trusted_sha256=sha, train=int(len(train)),
                          calibration=int(len(calib)), roles=roles, calibration_fpr=u / len(calib),
                          fpr_bound=bound, fpr_confidence=a.fpr_confidence, budget_met=met,
                          statistics=len(members), calibration_rows_needed=needed, models=report)))


if __name__ == "__main__":
    main()
