#!/usr/bin/env python3
"""Write small public data sets the repository does not use as guard records (JSON lines), for
`scripts/probe-datasets.sh`, which brings each through `ingest-guard init` as a new user would.

From the river==0.26.1 wheel that `scripts/setup.sh` fetches: phishing (1,250 rows, 9 numeric
features on a 0 / 0.5 / 1 grid, 2 classes), solar flare (1,066 rows, categorical and small
integer features, the Zurich class as label) and chick weights (578 rows, the diet as label).
From scikit-learn's bundled data (the training environment): digits (1,797 8x8 images as a
64-value tensor), wine (178), breast cancer (569) and iris (150). Rows are shuffled (seed 7)
and spread over three sources. Usage: probe_datasets.py RIVER_WHEEL OUT_DIR
"""
import csv, gzip, io, json, os, random, sys, zipfile


def key(name):
    k = "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()
    return k or "col"


def number(v):
    try:
        x = float(v)
    except ValueError:
        return v
    return int(x) if x.is_integer() and all(c not in v for c in ".eE") else x


def write(out, name, rows):
    random.Random(7).shuffle(rows)
    with open(os.path.join(out, f"{name}.jsonl"), "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"source": f"p-{i % 3}", **r}) + "\n")
    print(f"probe: {name} {len(rows)} rows", file=sys.stderr)


def river_csv(wheel, member, inner=None):
    with zipfile.ZipFile(wheel) as w:
        data = w.read(member)
    if member.endswith(".gz"):
        text = gzip.decompress(data).decode()
    elif member.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            text = z.read(inner or z.namelist()[0]).decode()
    else:
        text = data.decode()
    return list(csv.DictReader(io.StringIO(text)))


def river(wheel, out):
    for name, member, label in [("phishing", "river/datasets/phishing.csv.gz", "is_phishing"),
                                ("solar-flare", "river/datasets/solar-flare.csv.zip", "zurich-class"),
                                ("chick-weights", "river/datasets/chick-weights.csv", "diet")]:
        rows = [{("label" if k == label else key(k)): number(v) for k, v in r.items()}
                for r in river_csv(wheel, member)]
        for r in rows:
            r["label"] = str(r["label"])
        write(out, name, rows)


def sklearn_sets(out):
    from sklearn import datasets
    d = datasets.load_digits()
    write(out, "digits", [{"pixels": [int(v) for v in x], "label": str(y)} for x, y in zip(d.data, d.target)])
    for name, load in [("wine", datasets.load_wine), ("breast-cancer", datasets.load_breast_cancer),
                       ("iris", datasets.load_iris)]:
        d = load()
        write(out, name, [{**{key(k): float(v) for k, v in zip(d.feature_names, x)}, "label": str(y)}
                          for x, y in zip(d.data, d.target)])


if __name__ == "__main__":
    wheel, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    river(wheel, out)
    sklearn_sets(out)
