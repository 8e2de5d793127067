"""Segment and placement definitions: load YAML, validate against `schemas/segment.schema.json`, version.

Compilation into an evaluator is in `udfs.segments.compiler`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

from udfs.contract import SCHEMA_DIR

SEGMENT_SCHEMA_PATH = SCHEMA_DIR / "segment.schema.json"
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "segments" / "examples"


class DefinitionError(ValueError):
    """One or more definitions are invalid; `problems` lists `(name, message)` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems))


@dataclass(frozen=True)
class Issue:
    """A definition that was rejected (and, on hot reload, what was kept instead)."""

    name: str
    message: str
    kept_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "message": self.message, "kept_version": self.kept_version}


def load_segment_schema() -> dict[str, Any]:
    """Returns the definition JSON Schema as a dict."""
    schema: dict[str, Any] = json.loads(SEGMENT_SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@lru_cache(maxsize=1)
def _validator() -> Any:
    return jsonschema_rs.validator_for(load_segment_schema())


def schema_errors(doc: Any) -> list[str]:
    """Returns the JSON Schema violations of one definition document (empty when valid)."""
    errors = []
    for error in _validator().iter_errors(doc):
        path = "/".join(str(p) for p in error.instance_path) or "(root)"
        errors.append(f"{path}: {error.message}"[:300])
    return sorted(errors)


def parse_documents(text: str) -> list[dict[str, Any]]:
    """Parses YAML text holding one or more `---`-separated definition documents."""
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            problem = f"a definition must be a mapping, not {type(doc).__name__}"
            raise DefinitionError([("(document)", problem)])
    return docs


def load_files(paths: Iterable[Path | str]) -> list[dict[str, Any]]:
    """Loads every definition document of the given YAML files, in path order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(Path(p) for p in paths):
        docs.extend(parse_documents(path.read_text(encoding="utf-8")))
    return docs


def load_directory(directory: Path | str = EXAMPLES_DIR) -> list[dict[str, Any]]:
    """Loads every `*.yaml` / `*.yml` definition file of a directory."""
    root = Path(directory)
    return load_files([*root.glob("*.yaml"), *root.glob("*.yml")])


def canonical(doc: Mapping[str, Any]) -> str:
    """Canonical JSON text of a document (key order and YAML formatting do not matter)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def version_of(doc: Mapping[str, Any], dependencies: Iterable[str] = ()) -> str:
    """Content hash of a definition and the versions of what it references (so that changing a referenced
    segment changes the version of every segment using it)."""
    digest = hashlib.sha256(canonical(doc).encode("utf-8"))
    for dep in sorted(dependencies):
        digest.update(b"|" + dep.encode("ascii"))
    return "sha256:" + digest.hexdigest()[:16]
