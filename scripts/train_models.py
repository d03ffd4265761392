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

DOMAINS = {
    # schema id, model inputs (schema feature or tensor names), roles, hidden layers, activation
    "shuttle": dict(schema_id="shuttle-v1", inputs=[f"f{i}" for i in range(1, 10)], roles=["anomaly"],
                    ae_hidden=(16, 4, 16), ae_activation="tanh", ae_iter=300),
    "mnist": dict(schema_id="mnist-v1", inputs=["pixels"], roles=["anomaly", "label"],
                  ae_hidden=(64,), ae_activation="relu", ae_iter=60, clf_hidden=(128,), clf_iter=60),
}


def load(domain, path):
    rows = [json.loads(l) for l in open(path)]
    if domain == "shuttle":
        x = np.array([r["features"] for r in rows], dtype=np.float64)
    else:
        x = np.array([r["pixels"] for r in rows], dtype=np.float64)
    y = np.array([str(r["label"]) for r in rows])
    return rows, x, y


def trusted_split(domain, y, seed):
    """Indices: train, calibration (both trusted) and the evaluation stream (never trained on).
    Shuttle: half of the normal rows are trusted, the rest plus every anomaly is the stream.
    MNIST: half of all digits are trusted."""
    rng = np.random.default_rng(seed)
    pool = np.where(y == "0")[0] if domain == "shuttle" else np.arange(len(y))
    pool = rng.permutation(pool)
    trusted = pool[: len(pool) // 2]
    cut = int(len(trusted) * 0.8)
    train, calib = np.sort(trusted[:cut]), np.sort(trusted[cut:])
    stream = np.setdiff1d(np.arange(len(y)), trusted)
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


def autoencoder_graph(ae, mu, sd, width, activation):
    nodes, inits = [], []
    z = normaliser(nodes, inits, mu, sd)
    rec = dense_layers(nodes, inits, z, ae.coefs_, ae.intercepts_, activation, "ae")
    nodes += [
        helper.make_node("Sub", [rec, z], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["feature_error"]),
        helper.make_node("ReduceMean", ["feature_error"], ["score"], axes=[1], keepdims=0),
    ]
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
            graph = autoencoder_graph(model, mu, sd, width, d["ae_activation"])
        else:
            model = MLPClassifier(hidden_layer_sizes=d["clf_hidden"], max_iter=d["clf_iter"], random_state=a.seed)
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
        threshold = float(np.quantile(cal, 1.0 - a.target_fpr, method="higher"))
        meta = dict(base_meta, role=role, threshold=threshold, calibration_fpr=float(np.mean(cal > threshold)))
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
