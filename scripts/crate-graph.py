#!/usr/bin/env python3
"""Check the workspace's crate graph against the allowed one (DESIGN.md, issue 12), and that
no two files of one crate import each other, directly or around a loop.

Stage crates know guard-core (and guard-config, the typed configuration), never each other;
the few allowed exceptions are listed with their reason. Normal, build and dev dependencies
all count. A new guard-* crate must be added here before it may depend on anything.
Exit 1 with the offending edges.   python3 scripts/crate-graph.py
"""
import json
import subprocess
import sys

FLOORS = {"guard-core", "guard-config"}
ALLOWED = {
    "guard-core": set(),
    "guard-config": {"guard-core"},
    "guard-validate": {"guard-core"},
    "guard-stats": {"guard-core"},
    # Drift windows judge typed rows against guard-stats baselines.
    "guard-drift": FLOORS | {"guard-stats"},
    "guard-score": FLOORS,
    "guard-quarantine": {"guard-core"},
    # The record path assembles the stages (it is not one): checks, observers, scorers, the
    # policy and the quarantine sink; the Kafka edges implement its traits (CleanOut).
    "guard-pipeline": FLOORS | {"guard-validate", "guard-drift", "guard-score", "guard-quarantine"},
    "guard-server": {"guard-core"},
    # Kafka clients implement the pipeline's sink trait and keep its commit order.
    "guard-kafka": FLOORS | {"guard-pipeline"},
    # The review dashboard reads quarantine files.
    "guard-review": {"guard-core", "guard-quarantine"},
    # The offline side (record sets, baselines, evaluation, benches) judges files with the
    # record path's own batch judge; only the binary uses it, and never from the run path.
    "guard-eval": FLOORS
    | {"guard-validate", "guard-stats", "guard-drift", "guard-score", "guard-pipeline", "guard-quarantine"},
    # The binary wires everything.
    "ingest-guard": None,
}


def module_cycles(root):
    """Import cycles between the top-level modules (files) of each crate's `src/`."""
    import pathlib
    import re
    found = []
    for src in [pathlib.Path(root, "src")] + sorted(pathlib.Path(root, "crates").glob("*/src")):
        files = {f.stem: f for f in src.glob("*.rs")}
        files.update({d.name: d / "mod.rs" for d in src.iterdir() if (d / "mod.rs").exists()})
        mods = {m for m in files if m not in ("lib", "main")}
        edges = {}
        for m, f in files.items():
            text = f.read_text()
            used = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
            for group in re.findall(r"use crate::\{([^}]*)\}", text):
                used.update(re.findall(r"\b([a-z_][a-z0-9_]*)\b", group))
            edges[m] = {u for u in used if u in mods and u != m}
        # Tarjan-free: a cycle exists when a module reaches itself.
        for start in sorted(mods):
            stack, seen = [(start, [start])], set()
            while stack:
                node, path = stack.pop()
                for nxt in sorted(edges.get(node, ())):
                    if nxt == start:
                        cyc = " -> ".join(path + [start])
                        if not any(set(cyc.split(" -> ")) == set(c.split(": ")[1].split(" -> ")) for c in found):
                            found.append(f"{src.parent.name or 'ingest-guard'}: {cyc}")
                    elif nxt not in seen:
                        seen.add(nxt)
                        stack.append((nxt, path + [nxt]))
    return found


def main() -> int:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        check=True, capture_output=True, text=True,
    ).stdout
    bad = []
    for p in json.loads(out)["packages"]:
        name = p["name"]
        if name not in ALLOWED:
            bad.append(f"{name}: not in scripts/crate-graph.py's allowed graph")
            continue
        allowed = ALLOWED[name]
        if allowed is None:
            continue
        for d in p["dependencies"]:
            dep = d["name"]
            if dep.startswith("guard-") and dep not in allowed:
                kind = d["kind"] or "normal"
                bad.append(f"{name} -> {dep} ({kind}): not allowed")
    # The run path (the binary's run, events, review wiring and builders) never imports the
    # offline side.
    import pathlib
    for f in ("src/run.rs", "src/events.rs", "src/build.rs", "src/review.rs"):
        if "guard_eval" in pathlib.Path(f).read_text():
            bad.append(f"{f} imports guard_eval: the run path must not know the offline side")
    cycles = module_cycles(".")
    bad += [f"file-level import cycle in {c}" for c in cycles]
    for b in bad:
        print(f"crate-graph: {b}", file=sys.stderr)
    if not bad:
        print(f"crate-graph: {len(ALLOWED)} crates, no stage crate depends on another, no file-level import cycles")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
