#!/usr/bin/env python
"""Will the GPU path find every package it imports on the device? Checked here, before device time is spent.

    python benchmarks/device_env.py --check-list              here: the carried wheels' list is complete and
                                                              pinned as constraints.txt pins them
    python benchmarks/device_env.py --check-log DIR           here, after a rehearsal run with only the device's
                                                              packages importable (benchmarks/device/
                                                              sitecustomize.py): what it went without
    python benchmarks/device_env.py --check-imports           on the device: the GPU path imports, with the
                                                              carried versions first (optional ones only
                                                              warn); prints the versions found
    python benchmarks/device_env.py --check-results FILE      every case of a rehearsal produced a record

The device's image (benchmarks/device/packages.txt, from the device tool's KINDS.md) has torch and much
else but not DeepSpeed, hjson, pydantic, orjson or zstandard, and an older transformers; those travel as
the wheels in benchmarks/device/wheels.txt.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "benchmarks" / "device"
# what the GPU path imports at the top of its modules and in the GPU tests' fixtures
GPU_PATH = ["pretrain.cli.train", "pretrain.trainer", "pretrain.cli.preprocess_data", "pretrain.model.head",
            "deepspeed", "transformers.models.gpt2.modeling_gpt2", "transformers.models.bert.modeling_bert",
            "orjson", "zstandard", "hjson", "pydantic", "tests.conftest"]
# carried, but the GPU path goes on without them (pretrain/model/head.py falls back to the chunked head): one
# that fails to import (Liger's import builds on Triton) is a warning, never a reason to stop the session
OPTIONAL_IMPORTS = ["liger_kernel.transformers.fused_linear_cross_entropy"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(path: Path) -> dict[str, str | None]:
    """name -> version (None where unpinned) from a requirements-style file."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[normalize(name)] = version or None
    return found


def check_list() -> list[str]:
    """The carried wheels pin what constraints.txt pins, and cover what the image lacks of setup.py's needs."""
    wheels, device = pinned(DEVICE / "wheels.txt"), pinned(DEVICE / "packages.txt")
    constraints = pinned(ROOT / "constraints.txt")
    problems = [f"wheels.txt carries {name}=={version} but constraints.txt pins {constraints[name]}"
                for name, version in wheels.items() if name in constraints and constraints[name] != version]
    setup = (ROOT / "setup.py").read_text()
    required = re.findall(r'"([A-Za-z0-9_.-]+)[<>=!~]', setup.split("install_requires=[", 1)[1].split("]", 1)[0])
    for name in map(normalize, required):
        if name not in wheels and name not in device and name not in OPTIONAL_ON_DEVICE:
            problems.append(f"setup.py needs {name}, which the device lacks and wheels.txt does not carry")
    return problems


# needed by setup.py but imported only by paths the device never runs (dump readers, dedup, datasets folders)
OPTIONAL_ON_DEVICE = {"datasets", "mwparserfromhell", "ijson", "datasketch"}


def check_log(folder: Path) -> list[str]:
    """The rehearsal ran with the device's package set (benchmarks/device/sitecustomize.py): say which optional
    imports it refused (each process went on without them, as it will there); fail if it did not run so."""
    records = [path.read_text().splitlines() for path in sorted(folder.glob("*.txt"))]
    if not records:
        return [f"no import records in {folder}: the rehearsal did not run with benchmarks/device on PYTHONPATH"]
    refused = sorted({line.split()[1] for lines in records for line in lines[1:] if line.startswith("refused ")})
    print(f"device check: {len(records)} processes ran with the device's packages only; optional imports they "
          f"went on without: {', '.join(refused) or 'none'}")
    return []


def import_problem(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report every failure, not the first
        return f"import {module}: {type(exc).__name__}: {str(exc)[:160]}"
    return None


def check_imports() -> list[str]:
    """The GPU path's imports (problems) and the optional ones (warnings); the versions found, for the record."""
    sys.path.insert(0, str(ROOT))
    problems = [problem for problem in map(import_problem, GPU_PATH) if problem]
    for problem in filter(None, map(import_problem, OPTIONAL_IMPORTS)):
        print(f"device check: warning, optional: {problem} (the GPU path goes on without it)")
    want = pinned(DEVICE / "wheels.txt")["transformers"]
    have = importlib.metadata.version("transformers")
    if have != want:
        problems.append(f"transformers {have} is first on the path, not the carried {want}")
    versions = {name: version(name) for name in ("torch", "deepspeed", "transformers", "liger-kernel", "triton")}
    print("device check: " + " | ".join(f"{name} {found}" for name, found in versions.items()))
    return problems


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def check_results(path: Path) -> list[str]:
    if not path.exists():
        return [f"{path} was not written"]
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    problems = [f"{r['preset']} {r['variant']}: {r['error']}" for r in records if "error" in r]
    return problems or ([] if records else [f"{path} holds no record"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check-list", action="store_true")
    group.add_argument("--check-log", type=Path)
    group.add_argument("--check-imports", action="store_true")
    group.add_argument("--check-results", type=Path)
    args = parser.parse_args()
    if args.check_list:
        problems = check_list()
    elif args.check_log:
        problems = check_log(args.check_log)
    elif args.check_imports:
        problems = check_imports()
    else:
        problems = check_results(args.check_results)
    for problem in problems:
        print(f"device check: {problem}", file=sys.stderr)
    print("device check: " + ("FAILED" if problems else "ok"))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
