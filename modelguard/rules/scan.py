"""MG0xx general, MG1xx pickle, MG2xx archives, MG3xx tensor and model formats.

Scanners pass these objects to ``ScanContext.report``; a typo is an import error.
"""

from __future__ import annotations

from modelguard.findings import Severity
from modelguard.rules.base import Rule

# MG0xx: general
UNSUPPORTED_FORMAT = Rule(
    "MG001",
    "unsupported-format",
    Severity.INFO,
    "File format not recognised; the file was skipped.",
    "The file's magic bytes and structure match none of the formats modelguard "
    "understands, so nothing inside it was inspected.",
    "If this is a model file, open an issue with the format; otherwise exclude the "
    "path in [tool.modelguard] exclude.",
    ("coverage",),
)
SCAN_LIMIT_REACHED = Rule(
    "MG002",
    "scan-limit-reached",
    Severity.HIGH,
    "A hard safety cap was reached; the rest of the input was not inspected.",
    "Parsers of hostile input stop at fixed caps (opcodes, memo entries, nesting, "
    "archive members, decompressed bytes, archive depth). Past the cap nothing "
    "was checked, so the file cannot be vouched for: an attacker may pad a file "
    "to push a payload beyond the cap.",
    "Inspect the file by other means, or raise the cap in [tool.modelguard.limits] "
    "if the file is trusted and simply large.",
    ("security", "coverage"),
)
SCANNER_UNAVAILABLE = Rule(
    "MG003",
    "scanner-unavailable",
    Severity.MEDIUM,
    "A library needed to inspect this format is not installed.",
    "The file was recognised but the optional library that parses it is missing, "
    "so its contents were not inspected.",
    "Install the extra named in the message (e.g. pip install 'modelguard[all]').",
    ("coverage",),
)
SCANNER_ERROR = Rule(
    "MG004",
    "scanner-error",
    Severity.HIGH,
    "The scanner failed on this file; it was not fully inspected.",
    "An unexpected error stopped the format scanner. The file is treated as "
    "unverified (fail closed) rather than passed.",
    "Report the message to the modelguard developers with the file if possible.",
    ("coverage",),
)
FORMAT_CLAIM_UNMET = Rule(
    "MG005",
    "claimed-format-unreadable",
    Severity.MEDIUM,
    "The file's name (or its container) claims a format its bytes do not parse as.",
    "Loaders are chosen by name: torch.load for .pt, numpy.load for .npy, Keras for "
    ".keras and .h5, safetensors and onnx for theirs. A file that is not what its "
    "name says is either damaged, in which case loading fails, or disguised, in "
    "which case another reading of its bytes (a pickle, an archive found elsewhere "
    "in the file) is what some loader will act on.",
    "Regenerate the file with its format's own writer, or name it after what it is, "
    "and look at the other findings for what the bytes really hold.",
    ("security", "coverage"),
)

# MG1xx: pickle
PICKLE_DANGEROUS_IMPORT = Rule(
    "MG101",
    "pickle-dangerous-import",
    Severity.CRITICAL,
    "Pickle imports a callable that can execute code or touch the system.",
    "Unpickling resolves this global (os.system, builtins.eval, subprocess, "
    "runpy, ...) and typically calls it: loading the file runs attacker-chosen "
    "code. torch.load(weights_only=False), pickle.load and joblib.load are all "
    "affected.",
    "Do not load this file. Obtain the model as safetensors, or from a trusted, signed source.",
)
PICKLE_UNKNOWN_IMPORT = Rule(
    "MG102",
    "pickle-unknown-import",
    Severity.MEDIUM,
    "Pickle imports a global that is not on the allowlist.",
    "The global is neither known-safe (what torch.load(weights_only=True) and "
    "NumPy reconstruction need) nor known-dangerous. Importing it runs its "
    "module's import-time code, and its class may run code in __setstate__ or "
    "__new__.",
    "Review the named class; if it is your own trusted code, add it to "
    "[tool.modelguard] allow-globals. Prefer saving a state_dict or safetensors.",
)
PICKLE_UNKNOWN_CALL = Rule(
    "MG103",
    "pickle-unknown-call",
    Severity.HIGH,
    "Pickle calls a non-allowlisted global with arguments chosen by the file.",
    "REDUCE, INST or OBJ invoke the global with arguments from the stream: an "
    "arbitrary function call at load time. Benign checkpoints call only "
    "allowlisted rebuild functions.",
    "Treat the file as untrusted code. If the callable is your own and trusted, "
    "add it to [tool.modelguard] allow-globals.",
)
PICKLE_UNRESOLVED_CALL = Rule(
    "MG104",
    "pickle-unresolved-call",
    Severity.HIGH,
    "Pickle obtains or calls a callable that cannot be resolved statically.",
    "The module or name of a STACK_GLOBAL was not a plain string, or a call "
    "targets the result of another call or a value that is not an imported "
    "global, or BUILD "
    "sets attributes on an imported class or function itself (replacing what "
    "later uses of it call). Static analysis cannot say what runs, which is how "
    "scanner evasions are built.",
    "Do not load the file unless its origin is trusted and signed.",
)
PICKLE_MALFORMED = Rule(
    "MG105",
    "pickle-malformed",
    Severity.MEDIUM,
    "Pickle stream is malformed or truncated.",
    "The opcode stream is invalid (unknown opcode, truncated argument, stack "
    "underflow, missing STOP, unsupported protocol). Loaders behave differently "
    "on broken streams and scanners may stop early; both are evasion vectors.",
    "Re-export the model from its source; do not load a damaged pickle.",
    ("security", "integrity"),
)
PICKLE_TRAILING_DATA = Rule(
    "MG106",
    "pickle-trailing-data",
    Severity.LOW,
    "Bytes follow the last pickle STOP and are not a pickle.",
    "Data after STOP is ignored by pickle.load but may be read by other loaders or hide a payload.",
    "Re-export the file so it contains only the serialized object.",
    ("security", "integrity"),
)
PICKLE_MULTIPLE_STREAMS = Rule(
    "MG107",
    "pickle-multiple-streams",
    Severity.INFO,
    "The file holds several consecutive pickle streams; all were scanned.",
    "Loaders that call pickle.load repeatedly (legacy torch, joblib, custom "
    "code) read every stream; scanners that stop at the first STOP miss the rest.",
    "No action needed when the format expects several streams.",
    ("coverage",),
)
PICKLE_EXPANSION_BOMB = Rule(
    "MG108",
    "pickle-expansion-bomb",
    Severity.HIGH,
    "Pickle builds a structure that expands far beyond its size when loaded.",
    "Memo references and DUP let a few bytes refer to one container many times; "
    "nested, such references describe structures exponentially larger than the "
    "file (a billion-laughs pattern). Hashing or comparing them while loading "
    "(dict keys, sets) or walking them after takes time or memory far beyond the "
    "file's size: a denial of service against whatever loads it.",
    "Do not load the file; re-export the object from its source.",
    ("security", "denial-of-service"),
)
PICKLE_FORGED_OBJECT_ARRAY = Rule(
    "MG109",
    "pickle-forged-object-array",
    Severity.HIGH,
    "A joblib array's dtype makes joblib read raw file bytes as Python objects.",
    "joblib reads an array's data straight from the file when its dtype's pickled "
    "flags say it holds no Python objects, or maps it with mmap_mode. A dtype whose "
    "layout holds objects (object kind, object fields or subarray) read that way "
    "turns file bytes into object pointers: memory corruption that can crash the "
    "loader or be turned into code execution.",
    "Do not load the file; joblib never writes such arrays.",
)
PICKLE_EXTENSION_CODE = Rule(
    "MG110",
    "pickle-extension-code",
    Severity.LOW,
    "Pickle names a copyreg extension code, which a standard interpreter cannot resolve.",
    "EXT1/EXT2/EXT4 look a global up in copyreg's extension registry. The registry "
    "is empty in a standard interpreter and no common library fills it, so "
    "pickle.load stops with 'unregistered extension code' before anything after "
    "the opcode runs. Only a process that called copyreg.add_extension first (a "
    "dangerous import in its own right when a pickle does it) would resolve the "
    "code. Random tensor bytes start with these opcodes about once in a hundred "
    "blobs, which is why this is not reported as an unresolved call.",
    "Re-export the object with a standard pickler if the file is meant to load; "
    "if your loader registers extension codes, treat the file as untrusted code.",
)

# MG2xx: archives
ARCHIVE_PATH_TRAVERSAL = Rule(
    "MG201",
    "archive-path-traversal",
    Severity.HIGH,
    "Archive member name is absolute or climbs out of the extraction folder.",
    "Extracting such a member (tarfile, zipfile, torch legacy tar) writes outside "
    "the target folder: a classic way to overwrite code or configuration.",
    "Do not extract the archive; re-create it with relative member names.",
)
ARCHIVE_DUPLICATE_MEMBER = Rule(
    "MG202",
    "archive-duplicate-member",
    Severity.HIGH,
    "Archive holds two members with the same name.",
    "Different readers pick different copies (Python's zipfile the last, other "
    "readers the first), so a scanner and a loader may see different bytes. "
    "Every copy was scanned.",
    "Re-create the archive with unique member names.",
)
ARCHIVE_ENCRYPTED_MEMBER = Rule(
    "MG203",
    "archive-encrypted-member",
    Severity.MEDIUM,
    "Archive member is encrypted and cannot be inspected.",
    "Encrypted members cannot be scanned; model archives have no reason to contain them.",
    "Obtain an unencrypted copy of the model.",
    ("security", "coverage"),
)
ARCHIVE_BOMB = Rule(
    "MG204",
    "archive-bomb",
    Severity.HIGH,
    "Archive member declares or decompresses to an implausible size.",
    "A huge declared size or compression ratio is the signature of a "
    "decompression bomb that exhausts memory or disk when loaded.",
    "Do not load the file.",
)
ARCHIVE_MALFORMED = Rule(
    "MG205",
    "archive-malformed",
    Severity.MEDIUM,
    "Archive structure is damaged or inconsistent.",
    "Corrupt headers, CRC mismatches, or local headers that disagree with the "
    "central directory make readers disagree about the contents.",
    "Re-create the archive from the original files.",
    ("security", "integrity"),
)
ARCHIVE_LINK_MEMBER = Rule(
    "MG206",
    "archive-link-member",
    Severity.HIGH,
    "Tar archive holds a link or device member.",
    "Symbolic links, hard links and device nodes in a model archive can redirect "
    "extraction to files outside the target folder.",
    "Re-create the archive with regular files only.",
)
ARCHIVE_POLYGLOT = Rule(
    "MG207",
    "archive-polyglot",
    Severity.HIGH,
    "File parses as more than one format, and loaders would disagree.",
    "E.g. a pickle with a zip appended: torch.load reads the leading pickle, "
    "while zip-based scanners read the archive. Every interpretation was "
    "scanned.",
    "Do not load the file; re-export it from its source.",
)
ARCHIVE_UNSUPPORTED_COMPRESSION = Rule(
    "MG208",
    "archive-unsupported-compression",
    Severity.MEDIUM,
    "Archive member uses a compression method the scanner cannot read.",
    "Only stored, deflate and bzip2 zip members are decompressed. PyTorch and "
    "numpy write stored or deflated members; another method means the member "
    "was not inspected, although some readers (Python's zipfile) can load it.",
    "Re-create the archive with stored or deflated members.",
    ("security", "coverage"),
)

# MG3xx: tensor and model formats
NUMPY_OBJECT_ARRAY = Rule(
    "MG301",
    "numpy-object-array",
    Severity.MEDIUM,
    "NumPy array has an object dtype: its data is a pickle.",
    "numpy.load(allow_pickle=True) unpickles object arrays; the embedded pickle "
    "was scanned and its own findings are reported separately.",
    "Store numeric arrays only, or load with allow_pickle=False.",
)
NUMPY_MALFORMED = Rule(
    "MG302",
    "numpy-malformed",
    Severity.MEDIUM,
    "NumPy .npy header is malformed or disagrees with the file size.",
    "The header is not a valid dict literal with exactly the keys numpy.load "
    "expects, names an unknown dtype, declares more data than the file holds, or "
    "(low severity) is followed by bytes beyond the array data that numpy.load "
    "ignores and a second payload could hide in.",
    "Re-export the array.",
    ("security", "integrity"),
)
SAFETENSORS_MALFORMED_HEADER = Rule(
    "MG310",
    "safetensors-malformed-header",
    Severity.MEDIUM,
    "safetensors header is malformed.",
    "The header length exceeds the file, the header is not UTF-8 JSON with an "
    "object at the top, a key appears twice (readers disagree on which copy "
    "counts), or a tensor entry lacks dtype, shape or data_offsets or gives them "
    "the wrong types.",
    "Re-export the tensors with the safetensors library.",
    ("security", "integrity"),
)
SAFETENSORS_BAD_LAYOUT = Rule(
    "MG311",
    "safetensors-bad-layout",
    Severity.MEDIUM,
    "safetensors tensor byte ranges are invalid.",
    "Offsets out of range, overlapping or gapped tensors, bytes after the last "
    "tensor, or a byte range whose size is not shape x dtype size (in bits for "
    "sub-byte types). The reference loader rejects such files; other loaders may "
    "read out of bounds or alias tensors.",
    "Re-export the tensors with the safetensors library.",
    ("security", "integrity"),
)
SAFETENSORS_UNKNOWN_DTYPE = Rule(
    "MG312",
    "safetensors-unknown-dtype",
    Severity.MEDIUM,
    "safetensors tensor has an unknown dtype.",
    "The dtype string is not one the format defines.",
    "Re-export the tensors with a supported dtype.",
    ("security", "integrity"),
)
SAFETENSORS_BAD_METADATA = Rule(
    "MG313",
    "safetensors-bad-metadata",
    Severity.LOW,
    "safetensors __metadata__ is not a map of strings to strings.",
    "The format requires string metadata values; other types confuse consumers.",
    "Re-export with string metadata.",
    ("integrity",),
)
ONNX_EXTERNAL_DATA_ESCAPE = Rule(
    "MG320",
    "onnx-external-data-escape",
    Severity.HIGH,
    "ONNX external data location is absolute or leaves the model's folder.",
    "Loading the model reads (and some tools write) the named file: a path "
    "outside the model folder can exfiltrate or clobber arbitrary files. For a "
    "model file on disk, symbolic links are resolved too.",
    "Keep external data files beside the model with relative names.",
)
ONNX_CUSTOM_DOMAIN = Rule(
    "MG321",
    "onnx-custom-domain",
    Severity.MEDIUM,
    "ONNX graph uses an operator from a non-standard domain.",
    "Custom-domain operators are implemented by native code that the runtime "
    "must load from a custom-op library; they are outside the ONNX standard. "
    "Nodes in every graph, subgraph (If/Loop/Scan) and model-local function are "
    "checked; calls of a model-local function are not flagged, its body is.",
    "Verify the custom-op library's origin, or export with standard operators.",
)
ONNX_CHECKER_FAILED = Rule(
    "MG322",
    "onnx-checker-failed",
    Severity.LOW,
    "The ONNX checker rejects the model.",
    "onnx.checker.check_model reported the model as invalid. The checker runs on "
    "a copy whose external-data files are empty placeholders, so it judges the "
    "graph and never touches the files the model names.",
    "Re-export the model; see the checker message.",
    ("integrity",),
)
ONNX_MALFORMED = Rule(
    "MG323",
    "onnx-malformed",
    Severity.MEDIUM,
    "ONNX model cannot be parsed.",
    "The protobuf message is damaged or truncated, or holds no graph.",
    "Re-export the model.",
    ("security", "integrity"),
)
KERAS_LAMBDA_LAYER = Rule(
    "MG330",
    "keras-lambda-layer",
    Severity.HIGH,
    "Keras model contains a Lambda layer with serialized Python code.",
    "Lambda layers store marshalled Python bytecode that runs when the model is "
    "loaded with safe_mode=False (and in older Keras always), or name a Python "
    "function by module that loading imports.",
    "Replace the Lambda layer with a registered custom layer from your own code.",
)
KERAS_CUSTOM_OBJECT = Rule(
    "MG331",
    "keras-custom-object",
    Severity.MEDIUM,
    "Keras config references a class from a module outside Keras.",
    "Deserialising imports the named module and instantiates the class. Flagged: "
    "a module outside keras, tensorflow.keras and tf_keras, or a registered_name "
    "or class_name with a package prefix ('Package>Name') of another package.",
    "Verify the module is your own trusted code.",
)
KERAS_TORCH_MODULE = Rule(
    "MG333",
    "keras-torch-module",
    Severity.MEDIUM,
    "A Keras TorchModuleWrapper layer carries a pickled PyTorch module.",
    "With safe_mode=False, Keras rebuilds the layer by base64-decoding its 'module' "
    "field and calling torch.load(weights_only=False) on it: a full unpickling of "
    "bytes chosen by the file. The decoded pickle is scanned as well (its findings "
    "follow), but any pickled module is code the loader imports.",
    "Load only from a trusted source, or re-export the model without the wrapper "
    "(weights as safetensors, the module as code you control).",
)
TORCHSCRIPT_UNSAFE_OPERATION = Rule(
    "MG340",
    "torchscript-unsafe-operation",
    Severity.HIGH,
    "TorchScript code in the archive writes files, reads files or loads pickles.",
    "A TorchScript archive's code/ sources run inside torch.jit.load when a class "
    "defines __setstate__, and on every call of its methods: torch.save writes a "
    "file, torch.load unpickles one (arbitrary code), torch.from_file reads or "
    "creates one, and loading an operator library runs native code.",
    "Do not load the archive; export the model without file or pickle operations.",
)
TENSORFLOW_UNSAFE_OP = Rule(
    "MG350",
    "tensorflow-unsafe-op",
    Severity.HIGH,
    "A TensorFlow graph holds ops that reach outside the model when it runs.",
    "SavedModels and frozen graphs carry no Python code, but their graphs (and "
    "every function in their library) may hold ops that act on the host whenever "
    "the model is called: WriteFile and ReadFile write and read any path the graph "
    "computes, MatchingFiles lists files, ImmutableConst maps a named file, and "
    "PyFunc, PyFuncStateless and EagerPyFunc call Python functions registered in "
    "the serving process. A model that only computes on tensors needs none of them.",
    "Do not serve the model; re-export it from source without file or Python-call ops.",
)
KERAS_MALFORMED = Rule(
    "MG332",
    "keras-malformed",
    Severity.MEDIUM,
    "Keras model file or its config is malformed.",
    "The HDF5 file cannot be read, or the model_config / config.json is missing, "
    "is not a single string, is not valid JSON or lacks class_name and config.",
    "Re-save the model with Keras.",
    ("security", "integrity"),
)

RULES: tuple[Rule, ...] = (
    UNSUPPORTED_FORMAT,
    SCAN_LIMIT_REACHED,
    SCANNER_UNAVAILABLE,
    SCANNER_ERROR,
    FORMAT_CLAIM_UNMET,
    PICKLE_DANGEROUS_IMPORT,
    PICKLE_UNKNOWN_IMPORT,
    PICKLE_UNKNOWN_CALL,
    PICKLE_UNRESOLVED_CALL,
    PICKLE_MALFORMED,
    PICKLE_TRAILING_DATA,
    PICKLE_MULTIPLE_STREAMS,
    PICKLE_EXPANSION_BOMB,
    PICKLE_FORGED_OBJECT_ARRAY,
    PICKLE_EXTENSION_CODE,
    ARCHIVE_PATH_TRAVERSAL,
    ARCHIVE_DUPLICATE_MEMBER,
    ARCHIVE_ENCRYPTED_MEMBER,
    ARCHIVE_BOMB,
    ARCHIVE_MALFORMED,
    ARCHIVE_LINK_MEMBER,
    ARCHIVE_POLYGLOT,
    ARCHIVE_UNSUPPORTED_COMPRESSION,
    NUMPY_OBJECT_ARRAY,
    NUMPY_MALFORMED,
    SAFETENSORS_MALFORMED_HEADER,
    SAFETENSORS_BAD_LAYOUT,
    SAFETENSORS_UNKNOWN_DTYPE,
    SAFETENSORS_BAD_METADATA,
    ONNX_EXTERNAL_DATA_ESCAPE,
    ONNX_CUSTOM_DOMAIN,
    ONNX_CHECKER_FAILED,
    ONNX_MALFORMED,
    KERAS_LAMBDA_LAYER,
    KERAS_CUSTOM_OBJECT,
    KERAS_MALFORMED,
    KERAS_TORCH_MODULE,
    TORCHSCRIPT_UNSAFE_OPERATION,
    TENSORFLOW_UNSAFE_OP,
)
