"""A colour image sample from real pixels that a package ships, for `ingest-guard init` on
channels-last images nested as `ndarray.tolist()` writes them (BENCHMARKS.md, "Colour
photographs, nested"). Not part of setup or CI: it needs Pillow to decode scikit-learn's two
bundled photographs (china.jpg and flower.jpg).

    .tools/venv-train/bin/pip install pillow
    .tools/venv-train/bin/python scripts/photos_sample.py --rows 6000 --out photos.jsonl

Each row is a 24 x 24 crop at a random place of one photograph, `pixels` [24][24][3] (RGB,
0-255), `label` the photograph it comes from, `source` one of five labelers."""
import argparse
import json

import numpy as np
from sklearn.datasets import load_sample_images

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--rows", type=int, default=6000)
ap.add_argument("--side", type=int, default=24)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", required=True)
a = ap.parse_args()
images = load_sample_images().images
rng = np.random.default_rng(a.seed)
with open(a.out, "w") as f:
    for i in range(a.rows):
        k = int(rng.integers(2))
        band = int(rng.integers(3))  # where in the photograph, so the crops cover all of it
        im = images[k]
        h, w, _ = im.shape
        x0 = band * (w // 3) + int(rng.integers(0, w // 3 - a.side))
        y0 = int(rng.integers(0, h - a.side))
        crop = im[y0:y0 + a.side, x0:x0 + a.side, :]
        row = {"source": f"labeler-{i % 5}", "id": f"p{i}", "label": ["china", "flower"][k], "pixels": crop.tolist()}
        f.write(json.dumps(row, separators=(",", ":")) + "\n")
