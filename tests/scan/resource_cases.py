"""Hostile inputs that made scan cost grow faster than the file (issue 10, resource bounds).

Each builder returns the bytes of one case, deterministically; nothing here is
ever unpickled. ``tests/scan/test_resources.py`` scans them and checks the work
done against the file size; ``tests/benchmarks/bench_resources.py`` times them.
Sizes are parameters so the tests use small instances and the benchmark the
measured ones.
"""

from __future__ import annotations

import io
import struct
import zipfile

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def distinct_imports(count: int = 198_000) -> bytes:
    """A protocol 0 pickle that imports ``count`` distinct unknown globals (~10 bytes each)."""
    out = io.BytesIO()
    for i in range(count):
        out.write(b"cm%x\nf\n0" % i)  # GLOBAL m<i>.f, then POP
    out.write(b"N.")
    return out.getvalue()


def fake_pickle_starts(count: int = 100, run: int = 20_000) -> bytes:
    """A tiny pickle, then trailing bytes holding ``count`` PROTO starts that never STOP.

    Each fake start is followed by ``run`` bytes of valid opcodes (NONE, POP), so a
    walk from any of them reads to the end of the file: walking each one costs
    the whole rest of the file.
    """
    body = b"\x80\x04" + b"N0" * (run // 2)
    return b"\x80\x04N." + b"\x00" + body * count


def dense_pickle(size: int) -> bytes:
    """A valid pickle of about ``size`` bytes of one-byte opcodes (compresses ~1000:1)."""
    pairs = max(0, (size - 4) // 2)
    return b"\x80\x04" + b"N0" * pairs + b"N."


def zip_of_dense_pickles(members: int = 5, size: int = 20_000_000) -> bytes:
    """A zip of ``members`` deflated dense pickles of ``size`` bytes each (~98 KB in all)."""
    out = io.BytesIO()
    body = dense_pickle(size)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            info = zipfile.ZipInfo(f"archive/data{i}.pkl", date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, body)
    return out.getvalue()


def _short_unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def joblib_wrapper_frame(alignment: int | bool | None = False) -> bytes:
    """One framed NumpyArrayWrapper of an empty float64 array, as joblib pickles it.

    ``alignment`` False leaves out the ``numpy_array_alignment_bytes`` key (joblib
    <= 1.1 wrote none); None or an int writes the key with that value.
    """
    op = io.BytesIO()
    op.write(_short_unicode("joblib.numpy_pickle") + _short_unicode("NumpyArrayWrapper"))
    op.write(b"\x93)\x81}(")  # STACK_GLOBAL, EMPTY_TUPLE, NEWOBJ, EMPTY_DICT, MARK
    op.write(_short_unicode("subclass"))
    op.write(_short_unicode("numpy") + _short_unicode("ndarray") + b"\x93")
    op.write(_short_unicode("shape") + b"K\x00\x85")  # (0,)
    op.write(_short_unicode("order") + _short_unicode("C"))
    op.write(_short_unicode("dtype") + _short_unicode("numpy") + _short_unicode("dtype"))
    op.write(b"\x93" + _short_unicode("f8") + b"\x89\x88\x87R")  # dtype('f8', False, True)
    op.write(b"(K\x03" + _short_unicode("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    op.write(_short_unicode("allow_mmap") + b"\x88")
    if alignment is None:
        op.write(_short_unicode("numpy_array_alignment_bytes") + b"N")
    elif alignment is not False:
        op.write(_short_unicode("numpy_array_alignment_bytes") + b"K" + bytes([alignment]))
    op.write(b"ub")  # SETITEMS, BUILD
    frame = op.getvalue()
    return b"\x95" + struct.pack("<Q", len(frame)) + frame


def joblib_empty_arrays(count: int = 18) -> bytes:
    """A joblib pickle (as joblib <= 1.1 wrote it) of a list of ``count`` empty arrays.

    Without the alignment key there is no padding byte, so each wrapper's (empty)
    array data is followed at once by the next wrapper: 2.4 KB for 18 arrays.
    """
    out = io.BytesIO()
    out.write(b"\x80\x04]\x94(")  # PROTO 4, EMPTY_LIST, MEMOIZE, MARK
    for _ in range(count):
        out.write(joblib_wrapper_frame())
    out.write(b"e.")  # APPENDS, STOP
    return out.getvalue()
