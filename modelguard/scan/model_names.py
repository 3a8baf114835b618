"""File names that say "model", for deciding what an unrecognised file was.

Formats are chosen by content, never by name (``scan/formats.py``); a name is
used for one thing only: when no reading matches a file's bytes, a file named
like a model (``weights.pt``) is a finding, because a model that no reader
recognises could not be inspected, while any other file (``README.md``,
``train.py``) is simply not a model and is skipped. The pre-commit hook
``modelguard-scan`` selects the same suffixes (a test keeps them equal).
"""

from __future__ import annotations

from pathlib import PurePosixPath

# Lower-case, without the dot. Weights and checkpoints, serialised Python
# objects, tensor containers, exported graphs, and the archives models ship in.
MODEL_SUFFIXES: frozenset[str] = frozenset(
    {
        # PyTorch and pickle-based checkpoints
        "pt", "pth", "pt2", "bin", "ckpt", "pkl", "pickle", "p", "dill", "joblib", "sav",
        "mar", "pdparams", "nemo",
        # tensor containers and exported graphs
        "npy", "npz", "safetensors", "onnx", "ort", "h5", "hdf5", "keras", "pb",
        "tflite", "gguf", "ggml", "msgpack", "model", "mlmodel",
        # archives a model is shipped in
        "zip", "tar", "tgz", "gz", "bz2", "xz",
    }
)  # fmt: skip


def is_model_name(path: str) -> bool:
    """True if the last suffix of ``path`` (a display path or URL path) is a model suffix."""
    suffix = PurePosixPath(path.rstrip("/")).suffix
    return suffix[1:].lower() in MODEL_SUFFIXES
