"""The cleaning report: ``report.json`` for programs, ``report.md`` for people (documents and bytes kept
and removed per rule, with a few examples of each)."""

from __future__ import annotations

import json
from pathlib import Path

from pretrain.atomic import atomic_write_text
from pretrain.corpus.cleaning.rules import RULES

DESCRIPTIONS = {
    "boilerplate": "lines of page furniture removed (cookie and privacy notices, log-in links, share buttons)",
    "length": "documents too short after cleaning",
    "script": "documents mostly not in the language's script",
    "repetition": "documents with too much repeated lines, paragraphs or n-grams (Gopher's rules)",
    "exact": "exact copies of an earlier document (after NFC, case folding and whitespace)",
    "near": "near copies of an earlier document (MinHash on character 5-grams)",
}


def write_report(output: Path, options, shards: list[dict], counts, kept: dict, disabled: list[str]) -> dict:
    documents = sum(s["documents"] for s in shards)
    size = sum(s["bytes"] for s in shards)
    report = {
        "inputs": list(options.inputs), "language": options.language, "near_threshold": options.near_threshold,
        "shards": len(shards), "disabled": disabled, "settings": list(options.settings),
        "input": {"documents": documents, "bytes": size},
        "kept": {"documents": kept["documents"], "bytes": kept["bytes"], "parts": kept["parts"]},
        "removed": {rule: {"documents": counts.documents.get(rule, 0), "bytes": counts.bytes.get(rule, 0),
                           "examples": counts.examples.get(rule, [])} for rule in RULES},
        "normalized": sum(s["normalized"] for s in shards),
        "skipped": _sum_dicts(s["skipped"] for s in shards),
        "truncated_files": [f for s in shards for f in s["truncated_files"]],
        "filter_seconds": sum(s["seconds"] for s in shards),
    }
    atomic_write_text(output / "report.json", json.dumps(report, ensure_ascii=False, indent=1))
    atomic_write_text(output / "report.md", markdown(report))
    return report


def _sum_dicts(dicts) -> dict:
    total: dict = {}
    for d in dicts:
        for key, value in d.items():
            total[key] = total.get(key, 0) + value
    return total


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def markdown(report: dict) -> str:
    documents, size = report["input"]["documents"], report["input"]["bytes"]
    lines = ["# Cleaning report", "",
             f"Inputs: {', '.join(report['inputs'])}  ",
             f"Rules for: {report['language']}; near duplicates at Jaccard >= {report['near_threshold']}; "
             f"{report['shards']} shard(s)" + (f"; switched off: {', '.join(report['disabled'])}" if report['disabled']
                                              else ""), "",
             f"Read {documents:,} documents, {size / 1e6:,.1f} MB; kept **{report['kept']['documents']:,} documents "
             f"({_share(report['kept']['documents'], documents)}), {report['kept']['bytes'] / 1e6:,.1f} MB "
             f"({_share(report['kept']['bytes'], size)})** in {len(report['kept']['parts'])} part(s).", "",
             "| rule | what | documents removed | bytes removed |", "|---|---|---|---|"]
    for rule in RULES:
        removed = report["removed"][rule]
        state = " (off)" if rule in report["disabled"] else ""
        lines.append(f"| {rule}{state} | {DESCRIPTIONS[rule]} | {removed['documents']:,} "
                     f"({_share(removed['documents'], documents)}) | {removed['bytes']:,} ({_share(removed['bytes'], size)}) |")
    if report["normalized"]:
        lines += ["", f"{report['normalized']:,} documents were not in NFC and were normalized."]
    for reason, number in report["skipped"].items():
        lines.append(f"Skipped {number:,} unreadable records: {reason}.")
    for path in report["truncated_files"]:
        lines.append(f"Truncated input (its complete records were kept): {path}")
    lines += ["", "## Examples", ""]
    for rule in RULES:
        examples = report["removed"][rule]["examples"]
        if examples:
            lines.append(f"### {rule}")
            lines += [f"- `{where}` ({why}): {text}" for where, why, text in examples]
            lines.append("")
    return "\n".join(lines) + "\n"
