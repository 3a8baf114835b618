"""Classify the globals a pickle imports: safe, dangerous or unknown.

Allowlist first: a global is *safe* only when its full dotted path is on the
allowlist below (modelled on ``torch.load(weights_only=True)`` and NumPy array
reconstruction) or in the policy's ``allow-globals``. It is *dangerous* when it
reaches a module or callable that can execute code or touch the system, under
any alias a loader accepts. Everything else is *unknown* and gets reported.

Dotted names are resolved to what they really reach. ``find_class`` walks a
dotted name attribute by attribute, so ``("torch._utils", "os.system")`` is
``os.system`` reached through torch's module globals: dangerous, although its
module is harmless. Likewise a dunder segment (``__globals__``, ``__class__``,
``__builtins__`` ...) is a step of an object-traversal gadget.
"""

from __future__ import annotations

import _compat_pickle
import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    SAFE = "safe"
    UNKNOWN = "unknown"
    DANGEROUS = "dangerous"


@dataclass(frozen=True)
class Classification:
    """The verdict on one global, the dotted name it was judged by, and why."""

    verdict: Verdict
    dotted: str
    reason: str


# Modules where every attribute is dangerous: process control, code loading and
# execution, file system, network, interpreter internals, nested deserialisers.
# Private C twins (posix/nt for os, _pickle for pickle ...) are listed too.
DANGEROUS_MODULES: frozenset[str] = frozenset(
    {
        # processes and the operating system
        "os", "posix", "nt", "_posixsubprocess", "subprocess", "_winapi", "pty",
        "commands", "popen2", "multiprocessing", "_multiprocessing", "signal",
        "resource", "sys", "platform", "shutil", "tempfile",
        "fcntl", "msvcrt", "winreg", "_winreg",
        "asyncio", "concurrent", "threading", "_thread", "atexit", "gc",
        # code loading and execution
        "runpy", "importlib", "imp", "pkgutil", "zipimport", "code", "codeop",
        "compileall", "py_compile", "timeit", "cProfile", "profile", "_lsprof",
        "pdb", "bdb", "trace", "tracemalloc", "ctypes", "_ctypes", "cffi",
        "marshal", "pydoc", "inspect", "site", "sysconfig", "distutils",
        "setuptools", "pip", "venv", "ensurepip",
        "_xxsubinterpreters", "_interpreters", "faulthandler",
        # network, browsers, IPC
        "socket", "_socket", "ssl", "_ssl", "http", "urllib", "urllib2", "urllib3",
        "requests", "httpx", "ftplib", "smtplib", "telnetlib", "poplib", "imaplib",
        "xmlrpc", "xmlrpclib", "socketserver", "webbrowser", "mmap", "select",
        "selectors",
        # nested deserialisers (load another, unchecked payload)
        "pickle", "_pickle", "cPickle", "pickletools", "dill", "cloudpickle",
        "shelve", "dbm", "jsonpickle", "yaml", "_yaml",
        # scripting surfaces of ML libraries
        "IPython", "ipykernel",
    }
)  # fmt: skip

# Callables dangerous inside otherwise harmless modules, by (module, name).
DANGEROUS_NAMES: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            ("builtins", name)
            for name in (
                "exec", "eval", "compile", "getattr", "setattr", "delattr", "hasattr",
                "__import__", "open", "globals", "locals", "vars", "breakpoint", "input",
                "help", "exit", "quit", "memoryview", "type", "super", "classmethod",
                "staticmethod", "property", "__build_class__", "__loader__", "__spec__",
                "apply", "execfile", "file", "reload", "copyright", "credits", "license",
            )
        ),
        ("operator", "attrgetter"), ("operator", "methodcaller"), ("operator", "itemgetter"),
        ("functools", "partial"), ("functools", "partialmethod"), ("functools", "reduce"),
        ("functools", "singledispatch"), ("functools", "wraps"), ("functools", "update_wrapper"),
        ("types", "CodeType"), ("types", "FunctionType"), ("types", "MethodType"),
        ("types", "LambdaType"), ("types", "ModuleType"), ("types", "new_class"),
        ("types", "BuiltinFunctionType"), ("types", "BuiltinMethodType"),
        ("io", "open"), ("io", "open_code"), ("io", "FileIO"), ("_io", "open"),
        ("_io", "open_code"), ("_io", "FileIO"), ("codecs", "open"),
        ("fileinput", "input"), ("fileinput", "FileInput"),
        ("copyreg", "add_extension"), ("copyreg", "remove_extension"),
        ("logging.config", "listen"), ("logging.config", "fileConfig"),
        ("logging.config", "dictConfig"),
        ("torch", "load"), ("torch.serialization", "load"), ("torch", "hub"),
        ("torch.storage", "_load_from_bytes"), ("torch.jit", "load"),
        ("torch._C", "import_ir_module"), ("torch._C", "_import_ir_module_from_package"),
        ("torch", "package"), ("torch._ops", "ops"), ("torch", "ops"),
        ("torch.utils.cpp_extension", "load"), ("torch.utils.cpp_extension", "load_inline"),
        ("numpy", "load"), ("numpy.lib.npyio", "load"), ("numpy.lib._npyio_impl", "load"),
        ("numpy", "loads"), ("numpy.core.numeric", "loads"), ("numpy", "fromfile"),
        ("numpy", "memmap"), ("numpy", "tofile"), ("numpy.ctypeslib", "load_library"),
        ("numpy.testing._private.utils", "runstring"), ("numpy.testing", "runstring"),
        ("joblib", "load"), ("joblib.numpy_pickle", "load"), ("pandas", "read_pickle"),
        ("pandas.io.pickle", "read_pickle"), ("keras.models", "load_model"),
        ("tensorflow", "py_function"), ("tensorflow.io", "read_file"),
        ("tensorflow.io", "write_file"),
    }
)  # fmt: skip

# Packages whose whole subtree runs code (torch.hub downloads and imports repos,
# numpy.f2py compiles extensions, torch.package unpickles its own archives).
DANGEROUS_PACKAGES: frozenset[str] = frozenset(
    {"torch.hub", "torch.package", "torch.utils.cpp_extension", "numpy.f2py", "numpy.distutils"}
)

# Aliases that loaders resolve to another module. pickle applies
# _compat_pickle's Python 2 mappings for protocols < 3; torch.load applies the
# same; the private C modules below are what their public twins re-export.
MODULE_ALIASES: dict[str, str] = {
    **_compat_pickle.IMPORT_MAPPING,
    "__builtin__": "builtins",
    "exceptions": "builtins",
    "posix": "os",
    "nt": "os",
    "_io": "io",
    "_pickle": "pickle",
    "cPickle": "pickle",
    "_operator": "operator",
    "_functools": "functools",
    "copy_reg": "copyreg",
}


def _safe_torch() -> frozenset[str]:
    # Mirrors torch._weights_only_unpickler._get_allowed_globals() of torch 2.x,
    # written out so that scanning never needs torch installed.
    tensor_types = (
        "BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short",
    )  # fmt: skip
    storage_only = ("ComplexDouble", "ComplexFloat")
    quant_storage = ("QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8")
    names: set[str] = set()
    for prefix in ("torch", "torch.cuda"):
        names.update(f"{prefix}.{t}Storage" for t in (*tensor_types, *storage_only))
        names.update(f"{prefix}.{t}Tensor" for t in tensor_types)
    names.update(f"torch.{t}Storage" for t in quant_storage)
    for prefix in ("torch.sparse", "torch.cuda.sparse"):
        names.update(f"{prefix}.{t}Tensor" for t in tensor_types if t != "Bool")
    dtypes = (
        "bfloat16", "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8", "bool", "complex128",
        "complex32", "complex64", "float16", "float32", "float64", "float4_e2m1fn_x2",
        "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
        "qint32", "qint8", "quint2x4", "quint4x2", "quint8", "half", "float", "double",
        "int", "long", "short", "cfloat", "cdouble", "chalf", "uint8",
        *(f"int{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64)),
        *(f"uint{n}" for n in (1, 2, 3, 4, 5, 6, 7, 16, 32, 64)),
        "per_channel_affine", "per_channel_affine_float_qparams", "per_channel_symmetric",
        "per_tensor_affine", "per_tensor_symmetric",
    )  # fmt: skip
    names.update(f"torch.{d}" for d in dtypes)
    rebuild = (
        "_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor",
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
        "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage", "_rebuild_nested_tensor",
        "_rebuild_wrapper_subclass", "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor",
    )  # fmt: skip
    names.update(f"torch._utils.{f}" for f in rebuild)
    names.update(
        {
            "torch._tensor._rebuild_from_type_v2",
            "torch.nn.parameter.Parameter",
            "torch.serialization._get_layout",
            "torch.Size",
            "torch.Tensor",
            "torch.device",
            "torch.storage.TypedStorage",
            "torch.storage.UntypedStorage",
            "torch.strided",
            "torch.sparse_coo",
            "torch.sparse_csr",
            "torch._utils._rebuild_tensor_v2",
        }
    )
    return frozenset(names)


def _safe_numpy() -> frozenset[str]:
    names: set[str] = {"numpy.ndarray", "numpy.dtype", "numpy.ma.core._mareconstruct"}
    for core in ("numpy.core", "numpy._core"):
        names.update(
            {
                f"{core}.multiarray._reconstruct",
                f"{core}.multiarray.scalar",
                f"{core}.numeric._frombuffer",
            }
        )
    # numpy >= 1.25 pickles dtype classes by name (numpy.dtypes.Float32DType ...).
    kinds = (
        "Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
        "Byte", "UByte", "Short", "UShort", "Int", "UInt", "Long", "ULong", "LongLong",
        "ULongLong", "Float16", "Float32", "Float64", "LongDouble", "Complex64",
        "Complex128", "CLongDouble", "Bytes", "Str", "Void", "Object", "DateTime64",
        "TimeDelta64", "StringDType",
    )  # fmt: skip
    names.update(f"numpy.dtypes.{k}DType" for k in kinds)
    return frozenset(names)


def _safe_stdlib() -> frozenset[str]:
    # Constructors and pure functions that do nothing dangerous whatever arguments
    # the stream passes: they build a value from numbers and strings, or look at
    # objects that other (separately judged) globals made. Higher-order builtins
    # (map, filter, iter) and those that reach attributes (getattr, vars) are not
    # here; pow is not (pow(2, 10**12) is a denial of service).
    pure_builtins = (
        "abs", "all", "any", "ascii", "bin", "callable", "chr", "divmod", "enumerate",
        "format", "hash", "hex", "id", "isinstance", "issubclass", "len", "max", "min",
        "oct", "ord", "repr", "reversed", "round", "sorted", "sum", "zip",
    )  # fmt: skip
    return frozenset(
        {
            *(f"builtins.{name}" for name in pure_builtins),
            *(
                f"datetime.{name}"
                for name in ("date", "datetime", "time", "timedelta", "timezone", "tzinfo")
            ),
            "decimal.Decimal",
            "fractions.Fraction",
            "uuid.UUID",
            "uuid.SafeUUID",
            "collections.OrderedDict",
            "collections.Counter",
            "collections.defaultdict",
            "collections.deque",
        }
    )


def _safe_numpy_random() -> frozenset[str]:
    # What numpy pickles for Generator, RandomState and their bit generators. The
    # _pickle constructors look a bit generator up by name or instantiate the
    # class they are given (judged on its own import); __generator_ctor and
    # __randomstate_ctor call the constructor they are given, which the walker
    # then counts as called (CALLS_AN_ARGUMENT).
    return frozenset(
        {
            "numpy.random._pickle.__bit_generator_ctor",
            "numpy.random._pickle.__generator_ctor",
            "numpy.random._pickle.__randomstate_ctor",
            "numpy.random._generator.Generator",
            "numpy.random.mtrand.RandomState",
            "numpy.random._mt19937.MT19937",
            "numpy.random._pcg64.PCG64",
            "numpy.random._pcg64.PCG64DXSM",
            "numpy.random._philox.Philox",
            "numpy.random._sfc64.SFC64",
            "numpy.random.bit_generator.SeedSequence",
            "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        }
    )


# Safe constructors that call one of their arguments: (dotted, index of it).
CALLS_AN_ARGUMENT: dict[str, int] = {
    "numpy.random._pickle.__generator_ctor": 1,
    "numpy.random._pickle.__randomstate_ctor": 1,
}

# Modules every plain attribute of which is harmless: __future__'s feature
# records and the abstract base classes of collections.abc (calling one fails).
SAFE_MODULES: frozenset[str] = frozenset({"__future__", "collections.abc"})

SAFE_GLOBALS: frozenset[str] = frozenset(
    {
        *_safe_torch(),
        *_safe_numpy(),
        *_safe_numpy_random(),
        *_safe_stdlib(),
        "_codecs.encode",  # how protocol 2 pickles bytes
        # joblib's array placeholder: instantiated without arguments and given a
        # plain state dict; the scanner understands the array bytes it precedes.
        "joblib.numpy_pickle.NumpyArrayWrapper",
        # Reconstruction helpers of protocols 0-2: they only call the __new__ /
        # __init__ of a class the stream imports, which is classified itself.
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        *(
            f"builtins.{name}"
            for name in (
                "set", "frozenset", "bytearray", "bytes", "complex", "slice", "range",
                "list", "dict", "tuple", "int", "float", "bool", "str", "object",
            )
        ),
    }
)  # fmt: skip


# Module names that make a dotted path dangerous wherever they appear in it: a
# package or object that exposes one of these as an attribute hands out the
# whole module. Narrower than DANGEROUS_MODULES so that ordinary names such as
# scipy.signal or a "profile" attribute are not taken for an escape.
TRAVERSAL_MODULES: frozenset[str] = frozenset(
    {
        "os", "posix", "nt", "subprocess", "_posixsubprocess", "sys", "runpy", "importlib",
        "pty", "socket", "ctypes", "_ctypes", "marshal", "pickle", "_pickle", "cPickle",
        "shutil", "webbrowser", "pdb", "bdb", "timeit", "cProfile", "commands", "dill",
        "cloudpickle", "builtins", "__builtin__", "__builtins__",
    }
)  # fmt: skip


def normalise(module: str, name: str) -> tuple[str, str]:
    """The (module, name) a loader imports for ``module``/``name`` (py2 names mapped)."""
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is not None:
        return mapped
    return MODULE_ALIASES.get(module, module), name


def _is_py2_only(module: str, name: str) -> bool:
    return (module, name) in _compat_pickle.NAME_MAPPING or module in _PY2_MODULES


_PY2_MODULES = frozenset({*_compat_pickle.IMPORT_MAPPING, "__builtin__", "exceptions"})


def _policy_allows(module: str, name: str, allow: frozenset[str]) -> bool:
    if f"{module}.{name}" in allow:
        return True
    # "pkg.*" covers plain attributes of pkg and its submodules, never a dotted
    # name: that could reach any module pkg imports.
    if "." in name:
        return False
    parts = module.split(".")
    return any(".".join(parts[:i]) + ".*" in allow for i in range(1, len(parts) + 1))


# Real submodules whose names merely look like a dangerous module's.
GENUINE_SUBMODULES: frozenset[str] = frozenset({"numpy.random._pickle"})
# Lazy importers that serve standard modules under their own path (six.moves.cPickle
# is pickle): what follows this component names the module really imported.
_ALIAS_IMPORTERS = frozenset({"moves"})


def _module_is_dangerous(module: str) -> bool:
    """Whether importing ``module`` gives a dangerous module.

    A module path is resolved by the import system, not by attribute access: an
    inner component is a real package, never a module some package imported. So
    only the first component is matched, plus the last one (a submodule named
    like a dangerous module re-exports it: past.builtins, six.moves.cPickle,
    joblib.externals.cloudpickle), and whatever follows an alias importer.
    """
    parts = module.split(".")
    if parts[0] in DANGEROUS_MODULES:
        return True
    if any(".".join(parts[:i]) in DANGEROUS_PACKAGES for i in range(2, len(parts) + 1)):
        return True
    for i, part in enumerate(parts[:-1]):
        if part in _ALIAS_IMPORTERS and _module_is_dangerous(".".join(parts[i + 1 :])):
            return True
    return len(parts) > 1 and parts[-1] in TRAVERSAL_MODULES and module not in GENUINE_SUBMODULES


def _dangerous_reason(module: str, name: str) -> str | None:
    """Why ``module``.``name`` (already normalised) reaches something dangerous, if it does."""
    if _module_is_dangerous(module):
        return f"module {module} can execute code or touch the system"
    segments = name.split(".")
    # The callable reached through each prefix of the attribute path: "a.b.c" in
    # module m is m.a, then m.a.b, then m.a.b.c.
    for i in range(1, len(segments) + 1):
        reached_module = ".".join([module, *segments[: i - 1]])
        attr = segments[i - 1]
        if (reached_module, attr) in DANGEROUS_NAMES:
            return f"{reached_module}.{attr} can execute code or touch the system"
        if _module_is_dangerous(f"{reached_module}.{attr}"):
            return f"{reached_module}.{attr} is a dangerous package"
    for seg in segments:
        # Attribute traversal to a module-valued attribute, e.g. the "os" that
        # numpy.testing._private.utils imports, or builtins via __builtins__.
        if seg in TRAVERSAL_MODULES:
            return f"{module}.{name} reaches module {seg} through attribute access"
        if seg.startswith("__") and seg.endswith("__") and len(segments) > 1:
            return f"{module}.{name} walks through {seg}, an object-traversal gadget"
    return None


def classify(module: str, name: str, allow: frozenset[str] = frozenset()) -> Classification:
    """Judge the global ``module``/``name`` as a pickle loader would import it.

    ``allow`` holds policy entries ``"module.name"`` or ``"module.*"``. They make an
    unknown global safe but never a dangerous one: the denylist wins, as in
    ``torch.load(weights_only=True)``.
    """
    raw = f"{module}.{name}"
    if raw in SAFE_GLOBALS and not _is_py2_only(module, name):
        # Vetted full paths win over name patterns (numpy.random._pickle's ctors).
        return Classification(Verdict.SAFE, raw, "on the built-in allowlist")
    candidates = {(module, name), normalise(module, name)}
    # A loader maps py2 names only for protocols < 3; judge both spellings and
    # keep the worse verdict so the protocol cannot be used to slip one past.
    for mod, nm in sorted(candidates):
        reason = _dangerous_reason(mod, nm)
        if reason is not None:
            return Classification(Verdict.DANGEROUS, raw, reason)
    if not name or not module:
        return Classification(Verdict.UNKNOWN, raw, "empty module or name")
    mapped = normalise(module, name)
    if f"{mapped[0]}.{mapped[1]}" in SAFE_GLOBALS and (
        raw in SAFE_GLOBALS or _is_py2_only(module, name)
    ):
        # A py2 spelling (copy_reg, __builtin__) names no Python 3 module, so a
        # loader that does not map it fails to import it instead of reaching
        # something else.
        return Classification(Verdict.SAFE, raw, "on the built-in allowlist")
    if (
        "." not in name
        and not name.startswith("__")
        and mapped[0] in SAFE_MODULES
        and (module in SAFE_MODULES or _is_py2_only(module, name))
    ):
        return Classification(Verdict.SAFE, raw, f"a plain attribute of {mapped[0]}")
    if any(_policy_allows(mod, nm, allow) for mod, nm in candidates):
        return Classification(Verdict.SAFE, raw, "allowed by policy (allow-globals)")
    if any(f"{mod}.{nm}" in SAFE_GLOBALS for mod, nm in candidates):
        # Only one spelling is allowlisted; the other one is what a loader of a
        # different protocol would import, which is not vouched for.
        return Classification(Verdict.UNKNOWN, raw, "allowlisted under one spelling only")
    return Classification(Verdict.UNKNOWN, raw, "not on the allowlist")
