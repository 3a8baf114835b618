"""The symbolic values the pickle walker keeps on its stack and in its memo.

Only what decides a verdict is modelled: strings and small ints (module and
attribute names, tuple arguments, array shapes), the globals a stream imports,
the results of calls, and, for the joblib reading, the dicts, instances and
numpy dtypes that say where joblib finds an array's bytes. Everything else is
``DATA``. Known strings are plain ``str`` and small ints plain ``int`` (neither
is tracked by the cycle collector: cheap in bulk); short tuples are tuples of
values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from modelguard.scan.pickle.globals import Classification, Verdict


@dataclass
class ImportedGlobal:
    """One global a stream imports, where, how, and what it was judged to be."""

    module: str
    name: str
    classification: Classification
    offset: int
    opcode: str
    called: bool = False  # passed stream-chosen arguments (REDUCE / INST / OBJ)

    @property
    def dotted(self) -> str:
        return self.classification.dotted

    @property
    def verdict(self) -> Verdict:
        return self.classification.verdict


class Data:
    """Any value whose content does not matter (numbers, containers, long strings)."""

    __slots__ = ()


class _NoneData(Data):
    """``None``: joblib tells "no alignment padding" from any other value by it."""

    __slots__ = ()


DATA = Data()
NONE = _NoneData()


@dataclass(frozen=True)
class Global:
    ref: ImportedGlobal


@dataclass(frozen=True)
class Called:
    """The result of calling or instantiating ``callee`` (None: not resolvable)."""

    callee: ImportedGlobal | None


@dataclass(frozen=True)
class Unresolved:
    why: str


@dataclass(frozen=True)
class Extension:
    """What EXT1/2/4 push: the global a copyreg extension code names, if registered."""

    code: int


class Dict:
    """A dict built by the stream (joblib reading only): its str keys, if all known.

    ``exact`` is False once a key is not a known string, an update could not be
    followed, or the dict outgrew what is tracked; then its content is unknown.
    """

    __slots__ = ("exact", "items")

    def __init__(self, *, exact: bool = True) -> None:
        self.items: dict[str, Value] = {}
        self.exact = exact

    def set(self, key: Value, value: Value, cap: int) -> None:
        if not self.exact:
            return
        if type(key) is not str or (key not in self.items and len(self.items) >= cap):
            self.exact = False
            self.items.clear()
            return
        self.items[key] = value


class Instance:
    """An instance of a class whose state a loader reads (joblib's array wrappers).

    Shared between the stack and the memo, as the real object is: a BUILD on a
    memo copy changes the one object.
    """

    __slots__ = ("attrs", "cls", "exact")

    def __init__(self, cls: ImportedGlobal, attrs: dict[str, Value] | None = None) -> None:
        self.cls = cls
        self.attrs: dict[str, Value] = attrs if attrs is not None else {}
        self.exact = attrs is not None


class Container:
    """A list, dict or set the stream builds, with its expanded size.

    ``weight`` counts the nodes the container expands to when every reference
    is followed (a memo GET or DUP of a container counts its whole weight
    again): the size of what a loader or its caller walks, hashes or copies.
    Mutable and shared between the stack and the memo like the real object.
    """

    __slots__ = ("weight",)

    def __init__(self, weight: int = 1) -> None:
        self.weight = weight


class Dtype:
    """``numpy.dtype(spec, align, copy)``, with the state its BUILD gives it."""

    __slots__ = ("spec", "state")

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.state: Value | None = None


Value = Union[  # noqa: UP007 - a runtime alias (3.10 has no `type` statement)
    Data,
    str,
    int,
    tuple["Value", ...],
    Global,
    Called,
    Unresolved,
    Extension,
    Dict,
    Instance,
    Dtype,
    Container,
]
