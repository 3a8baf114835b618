"""Per-artifact facts for a bill of materials: what each file is, its digests, where it came from.

The CycloneDX reporter only renders; everything it says about an artifact
beyond the Report is gathered here, from the disk and the lock files:

* the component kind: a model (a format the scanner read), configuration or
  tokenizer data beside a model (``config.json``, ``tokenizer.json``, …, which
  the scan skips as not models), or a plain file (an archive, or a model-named
  file no reader recognised);
* SHA-256 of each local file (SHA-1 too when its lock entry pins one), and
  whether it still matches the lock;
* the lock entry that pins it: ``--lock`` when given, else the nearest
  ``modelguard.lock`` in its folder or a folder above it, up to the scan root
  (lock paths are relative to the lock file's folder);
* source, revision, the download URL and a package URL: ``pkg:huggingface``
  for Hub sources (the endpoint in use, ``HF_ENDPOINT``, as ``repository_url``
  when it is not huggingface.co), ``pkg:generic`` with ``download_url``
  otherwise;
* the signature state, decided by the provenance rules of the findings in the
  report and their evidence (never their wording), else whether a bundle lies
  beside the file.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from modelguard.errors import ModelGuardError
from modelguard.findings import ArtifactResult, Finding, Report
from modelguard.rules import provenance
from modelguard.scan.model_names import is_model_name
from modelguard.supply.hashing import hash_file
from modelguard.supply.hub import HF_SCHEME, hf_endpoint, parse_hf
from modelguard.supply.lockfile import LOCK_NAME, LockEntry, read_lock
from modelguard.supply.signing import DEFAULT_SIGNATURE_NAME, SIGNATURE_VERIFIED_EVIDENCE

DEFAULT_HUB = "https://huggingface.co"


class ComponentKind(enum.Enum):
    """CycloneDX component types modelguard uses."""

    MODEL = "machine-learning-model"
    DATA = "data"
    FILE = "file"


class SignatureState(enum.Enum):
    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    INVALID = "invalid"
    WRONG_KEY = "wrong-key"
    BUNDLE_MALFORMED = "bundle-malformed"
    PRESENT_UNVERIFIED = "present-unverified"
    NOT_CHECKED = "not-checked"


# Files that configure a model or hold its tokenizer: data, not models, in a BOM
# (the Hub's and transformers' names).
COMPANION_DATA: frozenset[str] = frozenset(
    {
        "config.json", "generation_config.json", "preprocessor_config.json",
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
        "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
        "chat_template.jinja", "adapter_config.json", "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    }
)  # fmt: skip
# ONNX keeps large tensors in files beside the graph (onnx.save(..., location=)).
COMPANION_DATA_SUFFIXES: tuple[str, ...] = (".onnx.data", ".onnx_data")
# Formats that are containers: a model when named as one (checkpoint.pt2,
# state.pkl.gz), a plain file when named as an archive (bundle.tar.gz, x.zip).
ARCHIVE_FORMATS: frozenset[str] = frozenset({"zip", "tar", "gzip", "bzip2", "xz"})
_COMPRESSION_SUFFIXES = frozenset({".gz", ".bz2", ".xz"})
_ARCHIVE_SUFFIXES = frozenset({".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz"})

# Most severe first: the state a report's findings give an artifact.
_SIGNATURE_RULES = (
    (provenance.SIGNATURE_INVALID, SignatureState.INVALID),
    (provenance.SIGNATURE_WRONG_KEY, SignatureState.WRONG_KEY),
    (provenance.BUNDLE_MALFORMED, SignatureState.BUNDLE_MALFORMED),
    (provenance.UNSIGNED, SignatureState.UNSIGNED),
)


@dataclass(frozen=True)
class ArtifactFacts:
    path: str  # as in the report
    kind: ComponentKind
    size: int
    sha256: str | None = None
    sha1: str | None = None
    source: str | None = None  # the lock's source, or the remote name itself
    revision: str | None = None
    download_url: str | None = None
    purl: str | None = None
    lock_file: str | None = None  # the lock that pins it, as a path
    lock_digest_match: bool | None = None
    signature: SignatureState = SignatureState.NOT_CHECKED


@dataclass(frozen=True)
class Inventory:
    artifacts: tuple[ArtifactFacts, ...] = ()
    hub_endpoint: str = DEFAULT_HUB
    notes: tuple[str, ...] = ()  # lock files that could not be used, and why

    def by_path(self) -> dict[str, ArtifactFacts]:
        return {a.path: a for a in self.artifacts}


def component_kind(artifact: ArtifactResult) -> ComponentKind:
    """What an artifact is in a BOM: from its format, and for archives from its name."""
    if artifact.format == "unknown":
        return ComponentKind.FILE
    if artifact.format not in ARCHIVE_FORMATS:
        return ComponentKind.MODEL
    suffixes = [x.lower() for x in PurePosixPath(artifact.path).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    if suffixes and is_model_name(f"x{suffixes[-1]}") and suffixes[-1] not in _ARCHIVE_SUFFIXES:
        return ComponentKind.MODEL
    return ComponentKind.FILE


def is_companion_data(path: str) -> bool:
    """A configuration, tokenizer or external-weights file that belongs to a model."""
    name = PurePosixPath(path).name
    return name in COMPANION_DATA or name.lower().endswith(COMPANION_DATA_SUFFIXES)


def _is_remote(path: str) -> bool:
    return path.startswith((HF_SCHEME, "https://", "http://"))


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)  # never open a FIFO named like a model
    except OSError:
        return False


def _digests(path: Path, want_sha1: bool) -> dict[str, str]:
    if not _regular_file(path):
        return {}
    try:
        return hash_file(path, ("sha256", "sha1") if want_sha1 else ("sha256",))
    except ModelGuardError:  # unreadable (hash_file names it): no digests to list
        return {}


class _Locks:
    """Lock files read once each; an unusable one pins nothing and leaves a note."""

    def __init__(self, root: Path, explicit: Path | None) -> None:
        self._root = root
        self._explicit = explicit
        self._read: dict[Path, dict[str, LockEntry] | None] = {}
        self.notes: list[str] = []

    def _entries(self, lock_path: Path) -> dict[str, LockEntry] | None:
        if lock_path not in self._read:
            try:
                self._read[lock_path] = read_lock(lock_path).by_path()
            except ModelGuardError as exc:
                self.notes.append(str(exc))
                self._read[lock_path] = None
        return self._read[lock_path]

    def _candidates(self, file_path: Path) -> Iterable[Path]:
        if self._explicit is not None:
            yield self._explicit
            return
        for folder in file_path.parents:
            candidate = folder / LOCK_NAME
            if candidate.is_file():
                yield candidate
            if folder == self._root or self._root not in folder.parents:
                return

    def pin(self, file_path: Path) -> tuple[Path, LockEntry] | None:
        for lock_path in self._candidates(file_path):
            entries = self._entries(lock_path)
            if entries is None:
                continue
            try:
                rel = file_path.relative_to(lock_path.parent).as_posix()
            except ValueError:
                continue
            if rel in entries:
                return lock_path, entries[rel]
        return None


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _hub_url(endpoint: str, source: str) -> tuple[str | None, str | None]:
    """(download URL, package URL) of an ``hf://owner/repo@revision/file`` source."""
    try:
        parsed = parse_hf(source)
    except ModelGuardError:
        return None, None
    owner, _, name = parsed.repo.partition("/")
    base = endpoint.rstrip("/")
    download = None
    if parsed.revision and parsed.path:
        download = f"{base}/{parsed.repo}/resolve/{quote(parsed.revision)}/{quote(parsed.path)}"
    purl = f"pkg:huggingface/{quote(owner)}/{quote(name)}"
    if parsed.revision:
        purl += f"@{quote(parsed.revision.lower())}"
    if base != DEFAULT_HUB:
        purl += f"?repository_url={quote(base, safe=':/')}"
    if parsed.path:
        purl += "#" + "/".join(quote(part) for part in parsed.path.split("/"))
    return download, purl


def _generic_purl(path: str, sha256: str | None, download_url: str | None) -> str | None:
    name = PurePosixPath(path.split("?", 1)[0]).name
    qualifiers = []
    if sha256:
        qualifiers.append(f"checksum=sha256:{sha256}")
    if download_url:
        qualifiers.append(f"download_url={quote(download_url, safe=':/')}")
    if not name or not qualifiers:
        return None
    return f"pkg:generic/{quote(name)}?{'&'.join(qualifiers)}"


def _signature(
    artifact_path: str, findings: Iterable[Finding], file_path: Path | None
) -> SignatureState:
    """What the report's provenance findings say about this artifact, most severe first."""
    folders = {str(p) for p in PurePosixPath(artifact_path).parents}
    relevant = [
        f for f in findings if f.location.path == artifact_path or f.location.path in folders
    ]
    for rule, state in _SIGNATURE_RULES:
        if any(f.rule_id == rule.id for f in relevant):
            return state
    if any(
        f.rule_id == provenance.VERIFIED.id and f.evidence == SIGNATURE_VERIFIED_EVIDENCE
        for f in relevant
    ):
        return SignatureState.VERIFIED
    if file_path is not None and (
        Path(f"{file_path}.sig").is_file() or (file_path.parent / DEFAULT_SIGNATURE_NAME).is_file()
    ):
        return SignatureState.PRESENT_UNVERIFIED
    return SignatureState.NOT_CHECKED


def gather(
    report: Report,
    *,
    lock: str | os.PathLike[str] | None = None,
    hub_endpoint: str | None = None,
    read_files: bool = True,
) -> Inventory:
    """Facts about every model artifact in ``report`` and the model data beside them.

    Args:
        report: a scan (or merged) report; relative artifact paths are read
            below ``report.root``.
        lock: the lock file that pins the artifacts; default: the nearest
            ``modelguard.lock`` above each artifact, up to the root.
        hub_endpoint: the Hugging Face endpoint the sources were fetched from;
            default ``HF_ENDPOINT``, else huggingface.co.
        read_files: False gives only what the report itself says (kinds, remote
            sources, signature findings): no digests, locks or bundles on disk.
    """
    root = Path(report.root)
    endpoint = (hub_endpoint or hf_endpoint() or DEFAULT_HUB).rstrip("/")
    locks = _Locks(root.resolve(), Path(lock).resolve() if lock is not None else None)
    findings = [*report.findings, *(s.finding for s in report.suppressed)]

    facts: list[ArtifactFacts] = []
    entries: list[tuple[str, ComponentKind, int]] = [
        (a.path, component_kind(a), a.size) for a in report.artifacts
    ]
    entries += [
        (s.path, ComponentKind.DATA, 0) for s in report.skipped if is_companion_data(s.path)
    ]
    for path, kind, size in entries:
        if read_files or _is_remote(path):
            facts.append(_facts(path, kind, size, root, locks, endpoint, findings))
        else:
            signature = _signature(path, findings, None)
            facts.append(ArtifactFacts(path=path, kind=kind, size=size, signature=signature))
    return Inventory(artifacts=tuple(facts), hub_endpoint=endpoint, notes=tuple(locks.notes))


def _facts(
    path: str,
    kind: ComponentKind,
    size: int,
    root: Path,
    locks: _Locks,
    endpoint: str,
    findings: list[Finding],
) -> ArtifactFacts:
    if _is_remote(path):
        # A remote scan: the artifact names its own source (and Hub commit); its
        # bytes were not all read, so there is no digest.
        source = path
        revision = parse_hf(path).revision if path.startswith(HF_SCHEME) else None
        download, purl = _hub_url(endpoint, path) if path.startswith(HF_SCHEME) else (path, None)
        if purl is None:
            purl = _generic_purl(path, None, download)
        return ArtifactFacts(
            path=path,
            kind=kind,
            size=size,
            source=source,
            revision=revision,
            download_url=download,
            purl=purl,
            signature=_signature(path, findings, None),
        )

    file_path = (root / path).resolve()
    pinned = locks.pin(file_path)
    entry = pinned[1] if pinned is not None else None
    digests = _digests(file_path, want_sha1=bool(entry is not None and entry.sha1))
    sha256 = digests.get("sha256")
    if size == 0 and _regular_file(file_path):
        size = file_path.stat().st_size
    download = purl = None
    if entry is not None and entry.source:
        if entry.source.startswith(HF_SCHEME):
            download, purl = _hub_url(endpoint, entry.source)
        elif entry.source.startswith(("https://", "http://")):
            download = entry.source
    if purl is None:
        purl = _generic_purl(path, sha256, download)
    return ArtifactFacts(
        path=path,
        kind=kind,
        size=size,
        sha256=sha256,
        sha1=digests.get("sha1") if entry is not None and entry.sha1 else None,
        source=entry.source if entry is not None else None,
        revision=entry.revision if entry is not None else None,
        download_url=download,
        purl=purl,
        lock_file=_shown(pinned[0], root) if pinned is not None else None,
        lock_digest_match=(
            entry.sha256 == sha256 if entry is not None and entry.sha256 and sha256 else None
        ),
        signature=_signature(path, findings, file_path),
    )
