"""Classification of pickle globals: allowlist, denylist with aliases, dotted paths, policy."""

from __future__ import annotations

import pytest

from modelguard.scan.pickle.globals import SAFE_GLOBALS, Verdict, classify, normalise

DANGEROUS = [
    ("os", "system"),
    ("posix", "system"),
    ("nt", "system"),
    ("os", "popen"),
    ("subprocess", "Popen"),
    ("subprocess", "check_output"),
    ("builtins", "exec"),
    ("builtins", "eval"),
    ("builtins", "compile"),
    ("builtins", "getattr"),
    ("builtins", "setattr"),
    ("builtins", "__import__"),
    ("builtins", "open"),
    ("builtins", "globals"),
    ("builtins", "breakpoint"),
    ("__builtin__", "eval"),  # py2 spelling, mapped by pickle for protocols < 3
    ("__builtin__", "execfile"),
    ("exceptions", "eval"),
    ("runpy", "run_path"),
    ("importlib", "import_module"),
    ("importlib.util", "spec_from_file_location"),
    ("pty", "spawn"),
    ("socket", "create_connection"),
    ("webbrowser", "open"),
    ("pickle", "loads"),
    ("_pickle", "loads"),
    ("cPickle", "loads"),
    ("torch", "load"),
    ("torch.serialization", "load"),
    ("torch.storage", "_load_from_bytes"),
    ("torch.hub", "load"),
    ("torch.hub", "_load_local"),
    ("numpy", "load"),
    ("numpy.testing._private.utils", "runstring"),
    ("code", "interact"),
    ("timeit", "timeit"),
    ("cProfile", "run"),
    ("pdb", "run"),
    ("bdb", "Bdb"),
    ("ctypes", "CDLL"),
    ("shutil", "rmtree"),
    ("sys", "modules"),
    ("operator", "attrgetter"),
    ("_operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("_operator", "methodcaller"),
    ("functools", "partial"),
    ("_functools", "partial"),
    ("marshal", "loads"),
    ("types", "CodeType"),
    ("types", "FunctionType"),
    ("pydoc", "pipepager"),
    ("_io", "open"),
    ("io", "open"),
    ("asyncio", "create_subprocess_shell"),
]


@pytest.mark.parametrize(("module", "name"), DANGEROUS)
def test_denylisted_globals_are_dangerous(module: str, name: str) -> None:
    result = classify(module, name)
    assert result.verdict is Verdict.DANGEROUS, result
    assert result.dotted == f"{module}.{name}"


SAFE = [
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch", "FloatStorage"),
    ("torch", "BFloat16Storage"),
    ("torch.storage", "UntypedStorage"),
    ("torch", "Size"),
    ("torch", "float32"),
    ("torch", "bfloat16"),
    ("torch", "device"),
    ("torch.nn.parameter", "Parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.dtypes", "Float32DType"),
    ("builtins", "set"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("__builtin__", "set"),  # py2 protocol-2 checkpoints
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    # stdlib constructors and pure functions, harmless with any arguments
    ("collections", "defaultdict"),
    ("collections", "deque"),
    ("collections", "Counter"),
    ("collections.abc", "Mapping"),
    ("_abcoll", "Mapping"),  # its py2 spelling (protocols < 3)
    ("datetime", "datetime"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"),
    ("fractions", "Fraction"),
    ("uuid", "UUID"),
    ("__future__", "annotations"),
    ("builtins", "len"),
    ("__builtin__", "len"),
    # what numpy writes for Generator / RandomState
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
]


@pytest.mark.parametrize(("module", "name"), SAFE)
def test_allowlisted_globals_are_safe(module: str, name: str) -> None:
    assert classify(module, name).verdict is Verdict.SAFE


def test_allowlist_covers_what_torch_weights_only_allows() -> None:
    torch_unpickler = pytest.importorskip("torch._weights_only_unpickler")
    allowed = set(torch_unpickler._get_allowed_globals())
    missing = sorted(allowed - SAFE_GLOBALS)
    assert missing == []


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("mypkg.nets", "Net"),
        ("torch.nn.modules.linear", "Linear"),
        ("__main__", "Model"),
        ("numpy.random._pickle", "other"),  # a real submodule named like pickle
        ("collections.abc", "Mapping.register"),  # dotted past a harmless module
        ("scipy.signal", "lfilter"),  # "signal" inside a path is not the signal module
        ("sklearn.linear_model", "LogisticRegression"),
        ("torch", "Tensor.foo"),  # dotted past an allowed path: not allowlisted itself
        ("joblib.numpy_pickle", "NDArrayWrapper"),  # old format: reads a file it names
    ],
)
def test_other_globals_are_unknown(module: str, name: str) -> None:
    assert classify(module, name).verdict is Verdict.UNKNOWN


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("torch._utils", "os.system"),  # protocol 4 qualname through an allowed module
        ("numpy.testing._private.utils", "os.system"),
        ("numpy.testing._private.utils.os", "system"),
        ("collections", "OrderedDict.__init__.__globals__"),
        ("torch", "_utils.__builtins__.eval"),
        ("mypkg", "helpers.subprocess.run"),
        ("mypkg", "sys"),
        ("torch", "hub.load"),
        ("torch", "serialization.load"),
        ("builtins", "__import__"),
    ],
)
def test_dotted_paths_resolve_to_what_they_reach(module: str, name: str) -> None:
    result = classify(module, name)
    assert result.verdict is Verdict.DANGEROUS, result


def test_only_exact_dotted_paths_are_safe() -> None:
    assert classify("torch", "_utils._rebuild_tensor_v2").verdict is Verdict.SAFE
    assert classify("torch._utils", "_rebuild_tensor_v2.x").verdict is Verdict.UNKNOWN


def test_py2_names_are_normalised() -> None:
    assert normalise("__builtin__", "unicode") == ("builtins", "str")
    assert normalise("copy_reg", "_reconstructor") == ("copyreg", "_reconstructor")
    assert normalise("mypkg", "X") == ("mypkg", "X")


def test_policy_allow_exact_and_wildcard() -> None:
    allow = frozenset({"mypkg.nets.Net", "otherpkg.*"})
    assert classify("mypkg.nets", "Net", allow).verdict is Verdict.SAFE
    assert classify("mypkg.nets", "Other", allow).verdict is Verdict.UNKNOWN
    assert classify("otherpkg", "A", allow).verdict is Verdict.SAFE
    assert classify("otherpkg.layers", "B", allow).verdict is Verdict.SAFE
    # a wildcard never covers a dotted name: it could reach anything otherpkg imports
    assert classify("otherpkg", "np.save", allow).verdict is Verdict.UNKNOWN
    assert classify("otherpkgx", "A", allow).verdict is Verdict.UNKNOWN


def test_policy_cannot_allow_dangerous_globals() -> None:
    allow = frozenset({"os.system", "os.*", "builtins.eval", "otherpkg.*"})
    assert classify("os", "system", allow).verdict is Verdict.DANGEROUS
    assert classify("builtins", "eval", allow).verdict is Verdict.DANGEROUS
    assert classify("otherpkg", "os.system", allow).verdict is Verdict.DANGEROUS
