"""What ``joblib.load`` makes of a NumpyArrayWrapper, modelled on joblib's own code.

joblib (``numpy_pickle.py``) pickles an array as a ``NumpyArrayWrapper`` and
writes the array's bytes straight after it, outside the pickle. On load its
``NumpyUnpickler.load_build`` runs the normal BUILD, and when the object on
the stack is then a wrapper it reads the array from the *file* (not through
the unpickler's frame buffer): for an object dtype a nested pickle, read by a
fresh pure-Python unpickler; otherwise, when the wrapper has an
``numpy_array_alignment_bytes`` attribute that is not None, one padding-length
byte and that much padding, then ``prod(shape) * dtype.itemsize`` bytes. With
``mmap_mode`` and ``allow_mmap`` it maps the bytes instead and seeks past them.

This module answers the static part: the wrapper's attributes after its
constructor and BUILD (as ``pickle._Unpickler.load_build`` sets them), and the
item size and object-ness of its numpy dtype after ``dtype.__setstate__``,
modelled on numpy's ``arraydescr_setstate`` without calling numpy. The walker
does the reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelguard.scan.pickle.values import (
    NONE,
    Called,
    Container,
    Data,
    Dict,
    Dtype,
    Global,
    ImportedGlobal,
    Instance,
    Value,
)

WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
# joblib <= 0.9 wrappers, still honoured by NumpyUnpickler.load_build: they name a
# companion file that joblib opens (NDArrayWrapper with numpy.load(allow_pickle=True)).
COMPAT_WRAPPERS = frozenset(
    f"joblib.{module}.{cls}"
    for module in ("numpy_pickle", "numpy_pickle_compat")
    for cls in ("NDArrayWrapper", "ZNDArrayWrapper")
)
# NumpyArrayWrapper.__init__(subclass, shape, order, dtype, allow_mmap=False,
# numpy_array_alignment_bytes=16)
_INIT_PARAMS = ("subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes")
_INIT_REQUIRED = 4
_INIT_DEFAULTS: dict[str, Value] = {"numpy_array_alignment_bytes": 16}
MAX_DICT_KEYS = 64  # keys tracked per dict; a wrapper's state has six
ARRAY_SUBCLASSES = frozenset({"numpy.ndarray", "numpy.memmap"})  # not re-wrapped on load
INT64 = 1 << 63


def wrapper_name(ref: ImportedGlobal) -> str | None:
    """The wrapper class ``ref`` reaches (either spelling of its path), if any."""
    dotted = f"{ref.module}.{ref.name}"
    if dotted == WRAPPER or dotted in COMPAT_WRAPPERS:
        return dotted
    return None


def is_wrapper_class(value: Value) -> bool:
    return isinstance(value, Global) and wrapper_name(value.ref) is not None


def built_wrapper(value: Value) -> bool:
    """Whether ``value`` is (in the reading without tracking) a wrapper instance."""
    return (
        isinstance(value, Called)
        and value.callee is not None
        and (wrapper_name(value.callee) is not None)
    )


class CannotLoad(Exception):
    """joblib.load raises at this point (the reading ends; nothing more runs)."""


def init_attrs(args: Value) -> dict[str, Value] | None:
    """The attributes ``NumpyArrayWrapper(*args)`` sets; None when args are unknown."""
    if not isinstance(args, tuple):
        return None
    if not _INIT_REQUIRED <= len(args) <= len(_INIT_PARAMS):
        raise CannotLoad(f"NumpyArrayWrapper() takes 4 to 6 arguments, not {len(args)}")
    attrs = dict(_INIT_DEFAULTS)
    attrs.update(zip(_INIT_PARAMS, args, strict=False))
    if len(args) < len(_INIT_PARAMS) - 1:
        attrs.setdefault("allow_mmap", False)
    return attrs


def apply_state(inst: Instance, state: Value) -> None:
    """``pickle._Unpickler.load_build`` without ``__setstate__``: update the instance dict.

    ``state`` is a dict, or a ``(state, slotstate)`` pair of dicts (the slot
    state is set with setattr, which for this class lands in the same dict).
    """
    slotstate: Value = NONE
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    for part in (state, slotstate):
        if part is NONE or part == () or part == "" or part == 0:
            continue  # falsy: nothing to set
        if isinstance(part, Dict) and part.exact:
            inst.attrs.update(part.items)
        else:
            inst.exact = False


@dataclass(frozen=True)
class DtypeFacts:
    """What joblib reads of a dtype: item size, ``hasobject``, and whether its layout
    holds Python objects at all (object kind, object fields or subarray)."""

    itemsize: int
    hasobject: bool
    holds_objects: bool


_SPEC = re.compile(r"[<>|=]?([biufcmMSUVO])(\d+)")
_FLEXIBLE = frozenset("SUV")
_MAX_DTYPE_NESTING = 8


def dtype_facts(value: Value, depth: int = 0) -> DtypeFacts | None:
    """Facts of the dtype ``value`` as numpy builds it; None when they cannot be known.

    Mirrors ``arraydescr_setstate`` (numpy/_core/src/multiarray/descriptor.c):
    flexible kinds (S, U, V) take their item size from the state; from state
    version 3 ``hasobject`` is the pickled flags' object bit, whatever the kind
    (a float dtype can claim objects, an object dtype deny them); before
    version 3 numpy derives it from the kind and the fields.
    """
    if not isinstance(value, Dtype) or depth > _MAX_DTYPE_NESTING:
        return None
    match = _SPEC.fullmatch(value.spec)
    if match is None:
        return None
    kind, size = match.group(1), int(match.group(2))
    base = 8 if kind == "O" else size * 4 if kind == "U" else size
    state = value.state
    if state is None:
        return DtypeFacts(base, kind == "O", kind == "O")
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        return None
    version, endian, subarray, _names, fields, elsize, _alignment, flags = state[:8]
    if not (_is_int(version) and _is_int(elsize) and _is_int(flags) and isinstance(endian, str)):
        return None
    assert isinstance(version, int) and isinstance(elsize, int) and isinstance(flags, int)
    if not 0 <= version <= 4:
        return None  # numpy: "can't handle version"
    holds = kind == "O"
    field_objects = False
    if isinstance(subarray, tuple) and len(subarray) == 2:
        inner = dtype_facts(subarray[0], depth + 1)
        if inner is None:
            return None
        holds = holds or inner.holds_objects
    elif subarray is not NONE:
        return None
    if isinstance(fields, Dict):
        if not fields.exact or version < 2:
            return None
        for entry in fields.items.values():
            inner = dtype_facts(entry[0], depth + 1) if isinstance(entry, tuple) and entry else None
            if inner is None:
                return None
            holds = holds or inner.holds_objects
            field_objects = field_objects or inner.hasobject
    elif fields is not NONE:
        return None
    itemsize = elsize if kind in _FLEXIBLE else base
    # From version 3 the flags are taken as pickled; before, numpy derives them.
    hasobject = bool(flags & 1) if version >= 3 else flags != 0 or kind == "O" or field_objects
    return DtypeFacts(itemsize, hasobject, holds or hasobject)


def _is_int(value: Value) -> bool:
    return isinstance(value, int)


def element_count(shape: tuple[Value, ...]) -> tuple[int, int]:
    """(count joblib computes, true product) for ``shape``.

    joblib multiplies the dimensions as numpy int64 (``np.multiply.reduce``),
    which wraps on overflow; converting a dimension outside int64 raises.
    """
    if not shape:
        return 1, 1
    count = 1
    product = 1
    for dim in shape:
        if not isinstance(dim, int):
            raise ValueError("dimension is not a known integer")
        if not -INT64 <= dim < INT64:
            raise CannotLoad(f"shape dimension {dim} does not fit in int64")
        product *= dim
        count = (count * dim) % (1 << 64)
    if count >= INT64:
        count -= 1 << 64
    return count, product


def truthy(value: Value) -> bool | None:
    """Python truthiness of a known value, None when unknown."""
    if value is NONE:
        return False
    if isinstance(value, (str, int, tuple)):
        return bool(value)
    if isinstance(value, (Data, Container)):
        return None  # a number, string or container whose content is not known
    return True  # globals, instances and call results are objects: true
