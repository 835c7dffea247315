"""Documents from nested JSON by a key path, for corpora such as NIKL's (모두의 말뭉치):

    --json-path 'document[].paragraph[].form'

Segments are separated by dots; ``key[]`` walks into a list. The first ``[]`` marks the document level:
every element of that list is one document, and the strings the rest of the path reaches inside it
are joined with newlines (one per paragraph or utterance). A path without ``[]`` makes the whole
object one document. A record (a JSONL line, or a whole-file JSON object) may so hold many documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pretrain.corpus.types import InputError


@dataclass(frozen=True)
class Step:
    key: str
    each: bool  # key[]: the value is a list, walk every element


@dataclass(frozen=True)
class JsonPath:
    text: str
    steps: tuple[Step, ...]

    @property
    def document_depth(self) -> int:
        """How many steps lead to the documents (through the first ``[]``); 0: the record is one."""
        for index, step in enumerate(self.steps):
            if step.each:
                return index + 1
        return 0

    @property
    def ijson_prefix(self) -> str:
        """ijson's prefix of the document elements (``document.item``), for streaming a whole-file JSON."""
        parts = []
        for step in self.steps[: self.document_depth]:
            parts += [step.key, "item"] if step.each else [step.key]
        return ".".join(parts)


def parse_path(text: str) -> JsonPath:
    steps = []
    for part in text.split("."):
        each = part.endswith("[]")
        key = part[:-2] if each else part
        if not key or "[" in key or "]" in key:
            raise InputError(f"--json-path {text!r}: {part!r} is not a key (keys are separated by dots; key[] walks a "
                             "list), e.g. 'document[].paragraph[].form'")
        steps.append(Step(key, each))
    if not steps:
        raise InputError("--json-path is empty")
    return JsonPath(text, tuple(steps))


def document_elements(record, path: JsonPath) -> list:
    """The document elements the path's first ``[]`` reaches in ``record`` (``[record]`` for a path without one);
    ValueError where the way there is missing. Each element's text is ``document_text``'s, so that one
    element without the rest of the path costs that document alone."""
    depth = path.document_depth
    return list(_walk([record], path.steps[:depth])) if depth else [record]


def document_text(element, path: JsonPath, depth: int | None = None) -> str:
    """The strings the rest of the path reaches inside one document element, joined with newlines."""
    depth = path.document_depth if depth is None else depth
    pieces = []
    for value in _walk([element], path.steps[depth:]):
        if isinstance(value, str):
            pieces.append(value)
        elif value is not None:
            raise ValueError(f"{path.text!r} reaches a {type(value).__name__}, not a string")
    return "\n".join(pieces)


def _walk(values: list, steps: tuple[Step, ...]) -> Iterator:
    if not steps:
        yield from values
        return
    step, rest = steps[0], steps[1:]
    for value in values:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object with {step.key!r}, found a {type(value).__name__}")
        if step.key not in value:
            raise ValueError(f"no {step.key!r} (keys: {', '.join(sorted(value)[:8]) or 'none'})")
        inner = value[step.key]
        if step.each:
            if not isinstance(inner, list):
                raise ValueError(f"{step.key!r} holds a {type(inner).__name__}, not a list")
            yield from _walk(inner, rest)
        else:
            yield from _walk([inner], rest)
