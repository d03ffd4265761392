"""Train, calibrate and export the guard's scoring models (no torch: scikit-learn for training,
the `onnx` helper API for the graphs, onnxruntime to check the export).

Roles
  anomaly  an MLP autoencoder on the schema's features. The ONNX graph normalises its input,
           reconstructs it and outputs `feature_error` [N, F] (squared error per feature, in
           normalised units: the explanation) and `score` [N] (their mean).
  label    an MLP classifier. The graph outputs `probabilities` [N, C]; the guard's score is
           1 - p(given label).

Each model is calibrated on held-out trusted rows that training never saw: the threshold is
the (1 - target FPR) quantile of their scores. Model and metadata (feature order,
normalisation, classes, threshold, calibration FPR, the trusted data's hash, seed, versions)
are written side by side, plus a parity fixture: a few rows with onnxruntime's outputs, which
the Rust tests must reproduce to 1e-5.

    python scripts/train_models.py --domain shuttle --data .data/shuttle.jsonl --out models/shuttle
    python scripts/train_models.py --domain mnist --data .data/mnist.jsonl --out models/mnist

Deterministic for a seed (single-threaded BLAS is forced below). `scripts/train-models.sh`
sets up the Python environment and regenerates every committed model.
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse, hashlib, json, warnings

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

DOMAINS = {
    # schema id, model inputs (schema feature or tensor names), roles, hidden layers, activation
    "shuttle": dict(schema_id="shuttle-v1", inputs=[f"f{i}" for i in range(1, 10)], roles=["anomaly"],
                    ae_hidden=(16, 4, 16), ae_activation="tanh", ae_iter=300),
    "mnist": dict(schema_id="mnist-v1", inputs=["pixels"], roles=["anomaly", "label"],
                  ae_hidden=(64,), ae_activation="relu", ae_iter=60, clf_hidden=(128,), clf_iter=60,
                  clf_alpha=1.0),
}


def load(domain, path):
    rows = [json.loads(l) for l in open(path)]
    if domain == "shuttle":
        x = np.array([r["features"] for r in rows], dtype=np.float64)
    else:
        x = np.array([r["pixels"] for r in rows], dtype=np.float64)
    y = np.array([str(r["label"]) for r in rows])
    return rows, x, y


MASK = (1 << 64) - 1


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def bucket(i, seed):
    """Row i's bucket 0..9; the same function is in src/evaluate.rs (`bucket`)."""
    return splitmix64((seed * 1_000_003 + i) & MASK) % 10


def trusted_split(domain, y, seed):
    """Indices: train, calibration (both trusted) and the evaluation stream (never trained on).
    A row is trusted when its bucket is below 5 (and, for Shuttle, it is a normal row);
    bucket 0 of the trusted rows is held out for calibration. Everything else is the stream
    `ingest-guard tools evaluate` replays."""
    b = np.array([bucket(i, seed) for i in range(len(y))])
    ok = (y == "0") if domain == "shuttle" else np.ones(len(y), dtype=bool)
    trusted = ok & (b < 5)
    train = np.where(trusted & (b > 0))[0]
    calib = np.where(trusted & (b == 0))[0]
    stream = np.where(~trusted)[0]
    return train, calib, stream


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


def normaliser(nodes, inits, mu, sd):
    inits += [numpy_helper.from_array(mu.astype(np.float32), "mu"), numpy_helper.from_array(sd.astype(np.float32), "sd")]
    nodes += [helper.make_node("Sub", ["x", "mu"], ["xc"]), helper.make_node("Div", ["xc", "sd"], ["z"])]
    return "z"


BACKGROUND = 0.05  # normalised reconstruction below this counts as background (images)


def image_statistics(ae, z):
    """numpy twin of the graph's two image statistics: the mean of the TOPK largest errors (a
    local patch such as a trigger) and the mean error where the reconstruction is background
    (a faint pattern spread over the whole image, such as a blended trigger or noise)."""
    rec = ae.predict(z)
    err = (rec - z) ** 2
    top = -np.sort(-err, axis=1)[:, :TOPK].mean(1)
    mask = (rec < BACKGROUND).astype(float)
    bg = (err * mask).sum(1) / (mask.sum(1) + 1.0)
    return top, bg


def autoencoder_graph(ae, mu, sd, width, activation, scales=None):
    nodes, inits = [], []
    z = normaliser(nodes, inits, mu, sd)
    rec = dense_layers(nodes, inits, z, ae.coefs_, ae.intercepts_, activation, "ae")
    nodes += [
        helper.make_node("Sub", [rec, z], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["feature_error"]),
    ]
    if width > TOPK:
        # Wide inputs (images): the mean of the TOPK largest errors, so a small local patch
        # (a trigger) is not averaged away over hundreds of clean pixels.
        # Plus the mean error over background pixels, so a faint whole-image pattern is seen
        # too; each statistic is divided by its 99th percentile on the training rows and the
        # score is the larger one.
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
            helper.make_node("TopK", ["feature_error", "k"], ["top_err", "top_idx"], axis=1),
            helper.make_node("ReduceMean", ["top_err"], ["top_mean"], axes=[1], keepdims=0),
            helper.make_node("Less", [rec, "bg_level"], ["is_bg"]),
            helper.make_node("Cast", ["is_bg"], ["bg_mask"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["feature_error", "bg_mask"], ["bg_err"]),
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
    graph = helper.make_graph(
        nodes, "guard_anomaly",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("feature_error", TensorProto.FLOAT, ["N", width])],
        inits)
    return graph


def classifier_graph(clf, mu, sd, width):
    nodes, inits = [], []
    z = normaliser(nodes, inits, mu, sd)
    logits = dense_layers(nodes, inits, z, clf.coefs_, clf.intercepts_, clf.activation, "clf")
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "guard_label",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(clf.classes_)])],
        inits)
    return graph


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ingest-guard train_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--domain", required=True, choices=sorted(DOMAINS))
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--target-fpr", type=float, default=0.01)
    a = ap.parse_args()
    d = DOMAINS[a.domain]
    os.makedirs(a.out, exist_ok=True)
    rows, x, y = load(a.domain, a.data)
    train, calib, stream = trusted_split(a.domain, y, a.seed)
    trusted_bytes = b"".join(json.dumps(rows[i], separators=(",", ":")).encode() + b"\n" for i in np.concatenate([train, calib]))
    sha = hashlib.sha256(trusted_bytes).hexdigest()
    width = x.shape[1]
    if a.domain == "mnist":
        mu, sd = np.zeros(width), np.full(width, 255.0)
    else:
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mu) / sd
    base_meta = dict(format=1, schema_id=d["schema_id"], inputs=d["inputs"], width=width, input_name="x",
                     trusted_sha256=sha, trusted_rows=int(len(train) + len(calib)), train_rows=int(len(train)),
                     calibration_rows=int(len(calib)), target_fpr=a.target_fpr, seed=a.seed,
                     split="see trusted_split() in scripts/train_models.py",
                     versions=dict(sklearn=sklearn.__version__, onnx=onnx.__version__, onnxruntime=ort.__version__,
                                   numpy=np.__version__, opset=OPSET))
    # A few trusted and stream rows (fewer for 784-wide images, to keep the files small).
    k = 4 if width < 100 else 2
    fixture_rows = np.concatenate([calib[:k], stream[: 3 * k]])
    report = {}
    for role in d["roles"]:
        if role == "anomaly":
            model = MLPRegressor(hidden_layer_sizes=d["ae_hidden"], activation=d["ae_activation"], max_iter=d["ae_iter"],
                                 random_state=a.seed)
            model.fit(z[train], z[train])
            scales = None
            if width > TOPK:
                top, bg = image_statistics(model, z[train])
                scales = (float(np.quantile(top, 0.99)), float(np.quantile(bg, 0.99)))
            graph = autoencoder_graph(model, mu, sd, width, d["ae_activation"], scales)
        else:
            model = MLPClassifier(hidden_layer_sizes=d["clf_hidden"], max_iter=d["clf_iter"], alpha=d["clf_alpha"],
                                  random_state=a.seed)
            model.fit(z[train], y[train])
            graph = classifier_graph(model, mu, sd, width)
        path = os.path.join(a.out, f"{role}.onnx")
        sess = save(graph, path)

        def scores(idx):
            outs = sess.run(None, {"x": x[idx].astype(np.float32)})
            if role == "anomaly":
                return outs[0], outs
            classes = list(model.classes_)
            p = outs[0][np.arange(len(idx)), [classes.index(c) for c in y[idx]]]
            return 1.0 - p, outs

        cal, _ = scores(calib)
        # The false-positive budget is the guard's, split evenly over the domain's models (a
        # clean record is quarantined when any model fires).
        role_fpr = a.target_fpr / len(d["roles"])
        threshold = float(np.quantile(cal, 1.0 - role_fpr, method="higher"))
        meta = dict(base_meta, role=role, threshold=threshold, target_fpr=role_fpr,
                    calibration_fpr=float(np.mean(cal > threshold)))
        if role == "anomaly":
            meta.update(score_output="score", feature_error_output="feature_error")
        else:
            meta.update(probabilities_output="probabilities", classes=[str(c) for c in model.classes_])
        with open(os.path.join(a.out, f"{role}.json"), "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        s, outs = scores(fixture_rows)
        fixture = dict(role=role, inputs=x[fixture_rows].astype(np.float32).tolist(), labels=y[fixture_rows].tolist(),
                       outputs={o.name: v.tolist() for o, v in zip(sess.get_outputs(), outs)}, scores=s.astype(float).tolist())
        with open(os.path.join(a.out, f"{role}.fixture.json"), "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
        report[role] = dict(threshold=threshold, calibration_fpr=meta["calibration_fpr"], bytes=os.path.getsize(path))
    print(json.dumps(dict(domain=a.domain, trusted_sha256=sha, train=len(train), calibration=len(calib),
                          stream=len(stream), models=report)))


if __name__ == "__main__":
    main()
