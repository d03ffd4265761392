"""The training backend of `ingest-guard train`: anomaly and label-consistency models for any
domain schema, calibrated on held-out trusted rows and exported to ONNX (no torch:
scikit-learn trains, the `onnx` helper API writes the graphs, onnxruntime checks the export).

    ingest-guard train --schema S --input TRUSTED.jsonl --out DIR [--roles anomaly,label]
                       [--target-fpr 0.01] [--seed 7]

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
           `score` [N]: their mean for tabular rows; for rows with a tensor, the larger of the
           mean of the 16 largest errors (a local patch such as a trigger) and the mean error
           where the reconstruction is background (a faint whole-image pattern), each divided
           by its 99th percentile on the training rows.
  label    an MLP classifier over every input except the label. The graph outputs
           `probabilities` [N, C]; the guard's score is 1 - p(given label). Trained only when
           the schema names a label and the trusted rows hold at least two classes.

Sizes (D = encoded width, n = training rows)
  autoencoder, tabular  (w, b, w), tanh, w = max(16, next power of two >= D) capped at 256,
                        b = max(2, round(0.4 D))
  autoencoder, tensor   (2 * next power of two >= sqrt D,), relu
  classifier            (4 * next power of two >= sqrt D,) clamped to [16, 256], relu;
                        L2 alpha 1.0 with a tensor (pixels are many weak inputs), 1e-4 else
  iterations            clamp(round(1e8 / (n D)), 30, 300)

Calibration: rows of the input whose bucket(i, seed) is 0 or 1 (about 20 %) are held out of
training; each role's threshold is the (1 - target FPR / roles) quantile of their scores (a
clean record is quarantined when any model fires). Metadata (inputs, levels, normalisation,
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
                    if isinstance(v, list):
                        vals = [number(e) for e in v[:size]]
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


def image_statistics(ae, h):
    """numpy twin of the graph's two tensor statistics (see the module docstring)."""
    rec = ae.predict(h)
    err = (rec - h) ** 2
    top = -np.sort(-err, axis=1)[:, :TOPK].mean(1)
    mask = (rec < BACKGROUND).astype(float)
    bg = (err * mask).sum(1) / (mask.sum(1) + 1.0)
    return top, bg


def feature_errors(ae, enc, h):
    """Per input value, the training rows' mean squared error (numpy twin of the graph's sum
    over each input's encoded dimensions)."""
    err = (ae.predict(h) - h) ** 2
    out = np.zeros(enc.layout.width)
    for d, c in enumerate(enc.owner):
        out[c] += err[:, d].mean()
    return np.maximum(out, 1e-6)


def autoencoder_graph(ae, enc, activation, scales, err_scale=None):
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
        c_top, c_bg = scales
        inits += [
            numpy_helper.from_array(np.array([TOPK], dtype=np.int64), "k"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(BACKGROUND, dtype=np.float32), "bg_level"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
            numpy_helper.from_array(np.array(c_top, dtype=np.float32), "c_top"),
            numpy_helper.from_array(np.array(c_bg, dtype=np.float32), "c_bg"),
        ]
        nodes += [
            helper.make_node("TopK", ["err", "k"], ["top_err", "top_idx"], axis=1),
            helper.make_node("ReduceMean", ["top_err"], ["top_mean"], axes=[1], keepdims=0),
            helper.make_node("Less", [rec, "bg_level"], ["is_bg"]),
            helper.make_node("Cast", ["is_bg"], ["bg_mask"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["err", "bg_mask"], ["bg_err"]),
            helper.make_node("ReduceSum", ["bg_err", "axis1"], ["bg_sum"], keepdims=0),
            helper.make_node("ReduceSum", ["bg_mask", "axis1"], ["bg_n"], keepdims=0),
            helper.make_node("Add", ["bg_n", "one"], ["bg_n1"]),
            helper.make_node("Div", ["bg_sum", "bg_n1"], ["bg_mean"]),
            helper.make_node("Div", ["top_mean", "c_top"], ["top_rel"]),
            helper.make_node("Div", ["bg_mean", "c_bg"], ["bg_rel"]),
            helper.make_node("Max", ["top_rel", "bg_rel"], ["score"]),
        ]
    else:
        nodes.append(helper.make_node("ReduceMean", ["feature_error"], ["score"], axes=[1], keepdims=0))
    return helper.make_graph(
        nodes, "guard_anomaly",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("feature_error", TensorProto.FLOAT, ["N", width])],
        inits)


def classifier_graph(clf, enc):
    nodes, inits = [], []
    h = enc.graph(nodes, inits)
    logits = dense_layers(nodes, inits, h, clf.coefs_, clf.intercepts_, clf.activation, "clf")
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    return helper.make_graph(
        nodes, "guard_label",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", enc.layout.width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(clf.classes_)])],
        inits)


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ingest-guard train")
    model.ir_version = 8
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
    a = ap.parse_args()
    if not 0.0 < a.target_fpr < 0.5:
        fail(f"--target-fpr {a.target_fpr} is outside (0, 0.5)")
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
    roles = [r for r in a.roles.split(",") if r] if a.roles != "auto" else ["anomaly"] + (["label"] if y is not None else [])
    for r in roles:
        if r not in ("anomaly", "label"):
            fail(f"unknown role {r!r} (anomaly, label)")
    if "label" in roles:
        if y is None:
            fail("--roles label: the schema's x-guard section names no label")
        if len(set(y[train])) < 2:
            if a.roles != "auto":
                fail("--roles label: the trusted rows hold one class only")
            roles.remove("label")
    enc = Encoder(layout, x[train])
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
    fixture_rows = clean[: 4 * k]
    report = {}
    d, n = enc.dim, len(train)
    for role in roles:
        iters = iterations(n, d)
        if role == "anomaly":
            if layout.has_tensor:
                hidden, act = (2 * pow2(math.sqrt(d)),), "relu"
            else:
                w = min(256, max(16, pow2(d)))
                hidden, act = (w, max(2, round(0.4 * d)), w), "tanh"
            model = MLPRegressor(hidden_layer_sizes=hidden, activation=act, max_iter=iters, random_state=a.seed)
            model.fit(h[train], h[train])
            scales = None
            if layout.has_tensor:
                top, bg = image_statistics(model, h[train])
                scales = (float(np.quantile(top, 0.99)) or 1.0, float(np.quantile(bg, 0.99)) or 1.0)
            err_scale = None if layout.has_tensor else feature_errors(model, enc, h[train])
            graph = autoencoder_graph(model, enc, act, scales, err_scale)
        else:
            hidden = (min(256, max(16, 4 * pow2(math.sqrt(d)))),)
            alpha = 1.0 if layout.has_tensor else 1e-4
            model = MLPClassifier(hidden_layer_sizes=hidden, max_iter=iters, alpha=alpha, random_state=a.seed)
            model.fit(h[train], y[train])
        if role == "label":
            graph = classifier_graph(model, enc)
        path = os.path.join(a.out, f"{role}.onnx")
        sess = save(graph, path)

        def scores(idx):
            outs = sess.run(None, {"x": x[idx].astype(np.float32)})
            if role == "anomaly":
                return outs[0].astype(np.float64), outs
            classes = list(model.classes_)
            p = np.array([outs[0][j, classes.index(c)] if c in classes else 0.0 for j, c in enumerate(y[idx])])
            return 1.0 - p, outs

        cal, _ = scores(calib)
        cal = np.nan_to_num(cal, nan=np.inf)
        role_fpr = a.target_fpr / len(roles)
        threshold = float(np.quantile(cal, 1.0 - role_fpr, method="higher"))
        meta = dict(base, role=role, threshold=threshold, target_fpr=role_fpr,
                    calibration_fpr=float(np.mean(cal > threshold)),
                    size=dict(hidden=list(hidden), iterations=iters, encoded_width=d))
        if role == "anomaly":
            meta.update(score_output="score", feature_error_output="feature_error")
        else:
            meta.update(probabilities_output="probabilities", classes=[str(c) for c in model.classes_])
        with open(os.path.join(a.out, f"{role}.json"), "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        s, outs = scores(fixture_rows)
        fixture = dict(role=role, row_index=[int(i) for i in fixture_rows], inputs=x[fixture_rows].astype(np.float32).tolist(),
                       labels=(y[fixture_rows].tolist() if y is not None else []),
                       outputs={o.name: v.tolist() for o, v in zip(sess.get_outputs(), outs)},
                       scores=s.astype(float).tolist())
        with open(os.path.join(a.out, f"{role}.fixture.json"), "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
        report[role] = dict(threshold=threshold, calibration_fpr=meta["calibration_fpr"], hidden=list(hidden),
                            iterations=iters, bytes=os.path.getsize(path))
    print(json.dumps(dict(schema_id=layout.schema_id, trusted_sha256=sha, train=int(len(train)),
                          calibration=int(len(calib)), roles=roles, models=report)))


if __name__ == "__main__":
    main()
