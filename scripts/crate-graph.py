#!/usr/bin/env python3
"""Check the workspace's crate graph against the allowed one (DESIGN.md, issue 12).

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
    "guard-score": {"guard-core"},
    "guard-quarantine": {"guard-core"},
    "guard-pipeline": {"guard-core"},
    "guard-server": {"guard-core"},
    # Kafka clients implement the pipeline's source and sink traits.
    "guard-kafka": FLOORS | {"guard-pipeline"},
    # The review dashboard reads quarantine files.
    "guard-review": {"guard-core", "guard-quarantine"},
    # The binary wires everything.
    "ingest-guard": None,
}


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
    for b in bad:
        print(f"crate-graph: {b}", file=sys.stderr)
    if not bad:
        print(f"crate-graph: {len(ALLOWED)} crates, no stage crate depends on another")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
