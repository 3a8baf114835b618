"""Evaluation data: ``.npz`` (``x`` float NCHW/NC, ``y`` int), a folder of images
per class (needs Pillow), or ``module:function`` returning an iterable of
``(x, y)`` batches from the user's own code. Everything becomes one in-memory
:class:`Dataset`; errors name the file and the offending shape, dtype or label."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelguard.backdoor.loaders import load_factory
from modelguard.backdoor.model import FloatArray, IntArray
from modelguard.errors import BackdoorAnalysisError, MissingExtra, UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass(frozen=True)
class Dataset:
    x: FloatArray
    y: IntArray
    source: str

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, size: int) -> list[tuple[FloatArray, IntArray]]:
        return [(self.x[i : i + size], self.y[i : i + size]) for i in range(0, len(self), size)]


def shiftable_images(shape: tuple[int, ...]) -> bool:
    """Whether a batch of this shape is (N, C, H, W) images big enough to move by a
    pixel: the guard's shifted copies and the fine-tuning's shifts both ask."""
    return len(shape) == 4 and min(shape[-2:]) >= 4


def load_data(spec: str | os.PathLike[str]) -> Dataset:
    """Read ``spec``: a .npz file, a folder of class folders, or ``module:function``."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        return _from_npz(path)
    if ":" in text and not text.endswith(".npz"):
        return _from_function(text)
    raise UsageError(
        f"{text}: no such data file or folder (expected .npz, a folder or MODULE:FUNC)"
    )


def _validated(x: object, y: object, source: str) -> Dataset:
    xa = np.asarray(x)
    ya = np.asarray(y)
    if xa.dtype.kind != "f":
        raise BackdoorAnalysisError(
            f"{source}: x has dtype {xa.dtype}; expected floating point (float32), "
            "already scaled the way the model was trained"
        )
    if xa.ndim < 2:
        raise BackdoorAnalysisError(f"{source}: x has shape {xa.shape}; expected NCHW or NC")
    if ya.ndim != 1 or ya.dtype.kind not in "iu":
        raise BackdoorAnalysisError(
            f"{source}: y has shape {ya.shape} and dtype {ya.dtype}; expected 1-D integer labels"
        )
    if len(xa) != len(ya):
        raise BackdoorAnalysisError(f"{source}: {len(xa)} inputs in x but {len(ya)} labels in y")
    if len(ya) == 0:
        raise BackdoorAnalysisError(f"{source}: the data set is empty")
    if ya.min() < 0:
        raise BackdoorAnalysisError(f"{source}: negative label {int(ya.min())} in y")
    if not np.all(np.isfinite(xa)):
        raise BackdoorAnalysisError(f"{source}: x holds NaN or infinite values")
    return Dataset(np.ascontiguousarray(xa, dtype=np.float32), ya.astype(np.int64), source)


def _from_npz(path: Path) -> Dataset:
    try:
        # allow_pickle=False: an .npz may carry pickled object arrays; never load them.
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise BackdoorAnalysisError(
                    f"{path}: missing array(s) {', '.join(sorted(missing))}; "
                    f"found {', '.join(archive.files) or 'none'} (need x and y)"
                )
            x, y = archive["x"], archive["y"]
    except ValueError as exc:
        raise BackdoorAnalysisError(f"{path}: cannot read the arrays: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise BackdoorAnalysisError(f"{path}: not a readable .npz file: {exc}") from exc
    return _validated(x, y, str(path))


def _from_folder(folder: Path) -> Dataset:
    if importlib.util.find_spec("PIL") is None:
        raise MissingExtra("reading a folder of images", "backdoor", "Pillow")
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise BackdoorAnalysisError(f"{folder}: expected one sub-folder of images per class")
    images: list[FloatArray] = []
    labels: list[int] = []
    for label, class_dir in enumerate(classes):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    mode = "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
                    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise BackdoorAnalysisError(f"{file}: not a readable image: {exc}") from exc
            array = array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)
            if images and array.shape != images[0].shape:
                raise BackdoorAnalysisError(
                    f"{file}: shape {array.shape} differs from {images[0].shape}; "
                    "resize all images to one size first"
                )
            images.append(array)
            labels.append(label)
    if not images:
        raise BackdoorAnalysisError(f"{folder}: no images found in the class folders")
    return _validated(np.stack(images), np.asarray(labels), str(folder))


def _from_function(spec: str) -> Dataset:
    batches = load_factory(spec)()
    xs: list[FloatArray] = []
    ys: list[IntArray] = []
    try:
        for batch in batches:
            bx, by = batch
            xs.append(np.asarray(bx))
            ys.append(np.asarray(by))
    except (TypeError, ValueError) as exc:
        raise BackdoorAnalysisError(
            f"{spec}: expected an iterable of (x, y) batches: {exc}"
        ) from exc
    if not xs:
        raise BackdoorAnalysisError(f"{spec}: returned no batches")
    try:
        x = np.concatenate(xs)
        y = np.concatenate(ys)
    except ValueError as exc:
        raise BackdoorAnalysisError(f"{spec}: batches have inconsistent shapes: {exc}") from exc
    return _validated(x, y, spec)
