"""List a run's checkpoints and check each against its manifest (file sizes and checksums).

    pretrain-inspect-checkpoint runs/ko-gpt2            (or python tools/inspect_checkpoint.py)
    pretrain-inspect-checkpoint runs/ko-gpt2 --no-verify   (sizes and state only: no file is read)
    pretrain-inspect-checkpoint runs/ko-gpt2 --write-manifest step00000100   (trust one saved without a manifest)

Shows every checkpoint, those set aside under damaged/, abandoned/ and replaced/ included: step,
samples consumed, ranks and ZeRO stage it was saved with, size, and whether it is complete and intact.
Exit code 0 when every complete checkpoint in checkpoints/ is intact, 1 when one is damaged."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pretrain import manifest
from pretrain.checkpoint import COMPLETE, latest_complete
from pretrain.cli.runner import UserError, run


def describe(folder: Path, verify: bool) -> tuple[str, bool]:
    """(the checkpoint's condition, whether it is damaged)."""
    if not (folder / COMPLETE).exists():
        return "incomplete (no COMPLETE: the run stopped while saving it; never resumed from)", False
    if not verify:
        return "complete (not verified)", False
    try:
        problems = manifest.verify(folder)
    except OSError as exc:
        problems = [str(exc)]
    if problems is None:
        return "complete, NO MANIFEST: not verified; a resume refuses it until --write-manifest records it", False
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"DAMAGED: {problems[0]}{more}", True
    return "complete, verified", False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run dir (or its checkpoints/ dir)")
    parser.add_argument("--no-verify", action="store_true", help="do not read the files to check their checksums")
    parser.add_argument("--write-manifest", metavar="TAG",
                        help="record the files of a complete checkpoint saved without a manifest as they are now, so "
                             "that a resume trusts them (only when you know they are intact)")
    args = parser.parse_args(argv)
    path = Path(args.run_dir)
    checkpoints = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not checkpoints.is_dir():
        raise UserError(f"{checkpoints} does not exist: pass a run dir (run.dir of a training run)")
    if args.write_manifest:
        return write_manifest(checkpoints / args.write_manifest)
    latest = latest_complete(checkpoints)
    folders = sorted(p for p in checkpoints.glob("step*") if p.is_dir() and not p.name.endswith("_universal"))
    aside = sorted(p for kind in ("damaged", "abandoned", "replaced") for p in (checkpoints / kind).glob("step*"))
    if not folders and not aside:
        print(f"no checkpoints in {checkpoints}")
        return 0
    damaged = False
    print(f"{'checkpoint':<30} {'step':>9} {'samples':>11} {'ranks':>5} {'ZeRO':>4} {'size':>10}  condition")
    for folder in folders + aside:
        state = _state(folder)
        condition, bad = describe(folder, not args.no_verify)
        damaged |= bad and folder.parent == checkpoints
        name = str(folder.relative_to(checkpoints)) + (" (latest)" if folder.name == latest and
                                                       folder.parent == checkpoints else "")
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{name:<30} {state.get('step', '?'):>9} {state.get('consumed_samples', '?'):>11} "
              f"{state.get('world_size', '?'):>5} {_stage(state):>4} {size / 2**20:>8.1f}MB  {condition}")
    if damaged:
        print("a damaged checkpoint is never resumed from: the next launch sets it aside under damaged/ and resumes "
              "from the newest intact one (or pick one with run.resume_from=TAG)")
    return 1 if damaged else 0


def write_manifest(folder: Path) -> int:
    """Record a manifest-less checkpoint's files (sizes and checksums) as they are now."""
    if not (folder / COMPLETE).exists():
        raise UserError(f"{folder} is not a complete checkpoint (no {COMPLETE}): it was never finished and is never "
                        "resumed from")
    if (folder / manifest.MANIFEST).exists():
        raise UserError(f"{folder} already has {manifest.MANIFEST}; check it without --write-manifest")
    names = manifest.files_of(folder)
    manifest.write(folder, manifest.describe(folder, names))
    print(f"recorded {len(names)} files of {folder.name} in {folder / manifest.MANIFEST}: a resume checks them from "
          "now on")
    return 0


def _state(folder: Path) -> dict:
    try:
        return json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return {}


def _stage(state: dict) -> str:
    stage = state.get("zero_stage")
    return "?" if stage is None else str(stage)


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
