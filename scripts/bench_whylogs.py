"""whylogs' profiling throughput on the Shuttle records, for the side-by-side in BENCHMARKS.md.

Loads .data/shuttle.jsonl into a pandas frame (nine float columns, the label as int), then
times `why.log(pandas=df)` over the frame `passes` times. Prints one JSON line with
feature-values/s (rows x nine numeric features, the guard's unit). Run on one core:
    taskset -c 0 python3 scripts/bench_whylogs.py
(needs `pip install whylogs pandas`; scripts/bench-profile.sh sets up a venv).
"""
import json, sys, time

import pandas as pd
import whylogs as why

path = sys.argv[1] if len(sys.argv) > 1 else ".data/shuttle.jsonl"
passes = int(sys.argv[2]) if len(sys.argv) > 2 else 5
rows = [json.loads(l) for l in open(path)]
df = pd.DataFrame([r["features"] for r in rows], columns=[f"f{i}" for i in range(1, 10)]).astype("float64")
frame_with_label = df.assign(label=[r["label"] for r in rows])
why.log(pandas=df.head(1000))  # warm-up (imports, sketch set-up)
best = None
for with_label, frame in (("numeric", df), ("numeric+label", frame_with_label)):
    t = time.perf_counter()
    for _ in range(passes):
        why.log(pandas=frame)
    s = time.perf_counter() - t
    fv = len(df) * 9 * passes / s
    print(json.dumps({"tool": "whylogs", "version": why.__version__, "pandas": pd.__version__,
                      "columns": with_label, "rows": len(df), "passes": passes,
                      "feature_values_per_s": round(fv)}))
