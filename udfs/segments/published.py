"""Definitions as published on the compacted `segment-definitions` topic: one record per definition, keyed by
its name, the value its YAML or JSON text (a tombstone, None or empty, removes it).

The job keeps the latest text per name (its broadcast state) and turns them into the documents for
`update_catalog`; `tools/segments_cli.py` publishes them. Pure Python, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from udfs.segments.definitions import DefinitionError, Issue, parse_documents


def definition_text(doc: Mapping[str, Any]) -> str:
    """The record value published for one definition: its canonical JSON (YAML 1.2 reads it as well)."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)


def parse_published(name: str, text: str) -> dict[str, Any]:
    """Parses one published definition and checks that it is a single document named like its key.

    Raises:
        DefinitionError: unreadable text, not exactly one document, or a name other than the record key.
    """
    try:
        docs = parse_documents(text)
    except yaml.YAMLError as exc:
        raise DefinitionError([(name, f"not YAML or JSON: {str(exc)[:200]}")]) from None
    if len(docs) != 1:
        raise DefinitionError([(name, f"a record holds exactly one definition, not {len(docs)}")])
    if docs[0].get("name") != name:
        raise DefinitionError([(name, f"record key {name!r} differs from the definition's name "
                                      f"{docs[0].get('name')!r}")])
    return docs[0]


def definition_set(published: Iterable[tuple[str, str | None]], base: Iterable[Mapping[str, Any]] = (),
                   previous: Mapping[str, Mapping[str, Any]] | None = None
                   ) -> tuple[list[Mapping[str, Any]], list[Issue]]:
    """The documents a set of published records defines, for `update_catalog`.

    Args:
        published: `(name, text)` per name (text None or empty: removed), e.g. the job's broadcast state.
        base: definitions known without the topic (e.g. given to the job directly); published records
            override and remove them by name.
        previous: the documents of the catalog in use (`Catalog.docs`): an unreadable record keeps its
            previous document.

    Returns:
        The documents, and the records that could not be read (the compiler reports invalid definitions).
    """
    docs = {str(doc.get("name", "")): doc for doc in base}
    issues = []
    for name, text in published:
        if not text:
            docs.pop(name, None)
            continue
        try:
            docs[name] = parse_published(name, text)
        except DefinitionError as exc:
            old = (previous or {}).get(name)
            issues.append(Issue(name, "; ".join(m for _, m in exc.problems), None))
            if old is not None:
                docs[name] = old
            else:
                docs.pop(name, None)
    return list(docs.values()), issues
