"""What the user named, sorted into what a registry scan does with it.

* ``hf://ORG``: every model repository of an owner, listed by the Hub;
* ``hf://owner/repo[@revision][/path]``: one repository (or part of it);
* ``s3://bucket/prefix``, ``gs://bucket/prefix``: every object below a prefix;
* ``https://…``: one file.

A list of sources can come from a file, one per line (``-``: standard input);
blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from modelguard.errors import UsageError

MAX_LIST_BYTES = 256 * 1024 * 1024


def is_registry_source(source: str) -> bool:
    """A source only a registry scan handles (an owner listing or an object store)."""
    if "://" not in source:
        return False  # a local path: asked for every scan, so the Hub client stays unloaded
    from modelguard.registry import hub, objectstore

    return objectstore.is_object_store(source) or hub.is_owner_source(source)


def read_source_list(name: str) -> list[str]:
    """The sources listed in file ``name`` (``-``: standard input), in order.

    Raises:
        UsageError: the file cannot be read or is not text.
    """
    try:
        if name == "-":
            text = sys.stdin.read(MAX_LIST_BYTES + 1)
        else:
            with Path(name).open(encoding="utf-8") as handle:
                text = handle.read(MAX_LIST_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{name}: no such source list") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{name}: cannot read the source list: {exc}") from None
    if len(text) > MAX_LIST_BYTES:
        raise UsageError(f"{name}: source list larger than {MAX_LIST_BYTES} bytes")
    return list(_sources(text.splitlines()))


def _sources(lines: Iterable[str]) -> Iterable[str]:
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def url_group(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
