#!/usr/bin/env python3
"""Software bill of materials for ingest-guard, as CycloneDX 1.5 JSON.

RustSec (`cargo deny check advisories`) covers the Rust crates; the C and C++ code the guard
runs does not appear there: librdkafka (bundled by rdkafka-sys, with its own lz4 and snappy),
zstd (zstd-sys), zlib and OpenSSL (the system's), and the ONNX Runtime library loaded at run time. This
lists all of them in one place, each with version, source and SHA-256, so they can be checked
against vendor advisories (librdkafka's GitHub advisories, ONNX Runtime's, Debian's tracker).

    python3 scripts/sbom.py > sbom/ingest-guard.cdx.json     # regenerate
    python3 scripts/sbom.py --check sbom/ingest-guard.cdx.json   # is the committed one current?

Deterministic: no timestamps, machine facts (the system zlib) only where a machine is asked.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent



def onnxruntime_pin():
    """The ONNX Runtime wheel's version and SHA-256, as scripts/setup.sh pins them."""
    m = re.search(r'"onnxruntime==([0-9.]+) ([0-9a-f]{64}) ', (ROOT / "scripts/setup.sh").read_text())
    return (m.group(1), m.group(2)) if m else ("unknown", None)


def lock_packages():
    text = (ROOT / "Cargo.lock").read_text()
    pkgs = []
    for block in text.split("[[package]]")[1:]:
        name = re.search(r'^name = "([^"]+)"', block, re.M)
        version = re.search(r'^version = "([^"]+)"', block, re.M)
        checksum = re.search(r'^checksum = "([^"]+)"', block, re.M)
        if name and version:
            pkgs.append((name.group(1), version.group(1), checksum.group(1) if checksum else None))
    return pkgs


def crate(pkgs, name):
    return next((p for p in pkgs if p[0] == name), None)


def bundled_lz4_version(rdkafka_sys_version):
    src = Path.home() / ".cargo/registry/src"
    for h in src.glob(f"*/rdkafka-sys-{rdkafka_sys_version}/librdkafka/src/lz4.h"):
        t = h.read_text(errors="replace")
        parts = [re.search(rf"#define LZ4_VERSION_{k}\s+(\d+)", t) for k in ("MAJOR", "MINOR", "RELEASE")]
        if all(parts):
            return ".".join(p.group(1) for p in parts)
    return "bundled"


def system_zlib(package="zlib1g"):
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def sha(h):
    return [{"alg": "SHA-256", "content": h}] if h else []


def build(with_machine=True):
    pkgs = lock_packages()
    comps = []
    rks = crate(pkgs, "rdkafka-sys")
    if rks:
        librdkafka = rks[1].split("+", 1)[1] if "+" in rks[1] else rks[1]
        comps.append({
            "type": "library", "name": "librdkafka", "version": librdkafka,
            "purl": f"pkg:github/confluentinc/librdkafka@v{librdkafka}",
            "description": f"C Kafka client, compiled from the source bundled in the rdkafka-sys {rks[1]} crate (hash: the crate's)",
            "hashes": sha(rks[2]),
            "properties": [{"name": "ingest-guard:features", "value": "libz (system zlib), zstd (zstd-sys), ssl (system OpenSSL), SASL PLAIN, SCRAM and OAUTHBEARER (unsecured JWT; no OIDC: built without libcurl; no GSSAPI: built without cyrus-sasl)"}],
        })
        comps.append({
            "type": "library", "name": "lz4", "version": bundled_lz4_version(rks[1]),
            "purl": "pkg:github/lz4/lz4",
            "description": "bundled inside librdkafka (src/lz4.c)", "hashes": sha(rks[2]),
        })
        comps.append({
            "type": "library", "name": "snappy (librdkafka rdsnappy)", "version": librdkafka,
            "description": "snappy decoder bundled inside librdkafka", "hashes": sha(rks[2]),
        })
    zs = crate(pkgs, "zstd-sys")
    if zs:
        comps.append({
            "type": "library", "name": "zstd", "version": zs[1].split("zstd.", 1)[-1],
            "purl": "pkg:github/facebook/zstd",
            "description": f"compiled from the zstd-sys {zs[1]} crate (librdkafka's zstd codec and Parquet's)",
            "hashes": sha(zs[2]),
        })
    lz = crate(pkgs, "libz-sys")
    zlib = {"type": "library", "name": "zlib", "purl": "pkg:deb/debian/zlib1g",
            "description": f"linked through libz-sys {lz[1] if lz else '?'}: the system's libz.so.1 (Debian zlib1g)"}
    if with_machine:
        zlib["version"] = system_zlib() or "system"
    comps.append(zlib)
    ossl = crate(pkgs, "openssl-sys")
    openssl = {"type": "library", "name": "openssl", "purl": "pkg:deb/debian/libssl3",
               "description": f"linked through openssl-sys {ossl[1] if ossl else '?'}: the system's libssl.so.3 and libcrypto.so.3 (Debian libssl3), librdkafka's TLS and SCRAM"}
    if with_machine:
        openssl["version"] = system_zlib("libssl3") or "system"
    comps.append(openssl)
    ort_version, ort_sha = onnxruntime_pin()
    comps.append({
        "type": "library", "name": "onnxruntime", "version": ort_version,
        "purl": f"pkg:pypi/onnxruntime@{ort_version}",
        "description": "ONNX Runtime (C++), libonnxruntime.so loaded at run time from the PyPI wheel (hash: the wheel's, pinned in scripts/setup.sh); CUDA builds use onnxruntime-gpu of the same version (scripts/gpu-check.sh)",
        "hashes": sha(ort_sha),
    })
    for name, version, checksum in pkgs:
        if checksum is None:
            continue  # the workspace's own crates
        comps.append({
            "type": "library", "name": name, "version": version,
            "purl": f"pkg:cargo/{name}@{version}", "hashes": sha(checksum),
        })
    own = crate(pkgs, "ingest-guard")
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {"component": {"type": "application", "name": "ingest-guard", "version": own[1] if own else "0"}},
        "components": comps,
    }


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        committed = json.loads(Path(sys.argv[2]).read_text())
        want = build(with_machine=False)
        key = lambda c: (c["name"], c.get("version"), json.dumps(c.get("hashes", [])))
        system = ("zlib", "openssl")  # versions are the machine's
        have = {key(c) for c in committed["components"] if c["name"] not in system}
        need = {key(c) for c in want["components"] if c["name"] not in system}
        if have != need:
            missing = sorted(need - have)[:10]
            stale = sorted(have - need)[:10]
            print(f"sbom: {sys.argv[2]} is out of date; run: python3 scripts/sbom.py > {sys.argv[2]}", file=sys.stderr)
            print(f"  missing: {missing}\n  stale: {stale}", file=sys.stderr)
            sys.exit(1)
        print(f"sbom: {sys.argv[2]} is current ({len(need) + 1} components)")
        return
    json.dump(build(), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
