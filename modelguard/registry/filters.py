"""Which repositories and objects a registry scan takes: name globs and Hub tags."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from modelguard.errors import UsageError

TAG_PREFIX = "tag:"


@dataclass(frozen=True)
class Filters:
    """``names``: globs, one of which must match; ``tags``: Hub tags, all required.

    A name glob is matched against a repository's name (with and without its
    owner) or an object's key below the listed prefix (and its last part).
    """

    names: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @classmethod
    def parse(cls, specs: Sequence[str]) -> Filters:
        """``tag:NAME`` requires a Hub tag; anything else is a name glob."""
        names: list[str] = []
        tags: list[str] = []
        for spec in specs:
            text = spec.strip()
            if text.startswith(TAG_PREFIX):
                tag = text[len(TAG_PREFIX) :].strip()
                if not tag:
                    raise UsageError(f"filter {spec!r}: expected tag:NAME")
                tags.append(tag)
            elif text:
                names.append(text)
            else:
                raise UsageError(f"filter {spec!r}: empty")
        return cls(tuple(names), tuple(tags))

    def accepts(self, name: str, tags: Iterable[str]) -> bool:
        if self.tags and not set(self.tags) <= set(tags):
            return False
        if not self.names:
            return True
        candidates = {name, name.rsplit("/", 1)[-1]}
        return any(fnmatch.fnmatchcase(c, glob) for c in candidates for glob in self.names)
