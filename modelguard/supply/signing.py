"""OpenSSF model-signing compatible signatures (the ``model-signing`` package's key method).

A signature is a Sigstore bundle (JSON, media type v0.3) whose DSSE envelope
carries an in-toto Statement v1. The statement's predicate
(``https://model_signing/signature/v1.0``) lists every file of the model with its
sha256 ("resources") and the serialization parameters used to enumerate them;
the single subject's digest is sha256 over the concatenated raw resource
digests, in path order. The envelope is signed with ECDSA over the DSSE
pre-authentication encoding (PAE). ``verificationMaterial.publicKey.hint`` is the
sha256 of the signer's PEM public key, which lets a verifier tell "wrong key"
from "bad signature".

modelguard writes the ``files`` serialization with sha256 and verifies
``files`` or ``shards`` with sha256 or blake2b. All cryptography goes through
the ``cryptography`` package; the bundle JSON is parsed here by hand because it
is hostile input and a verifier must classify every defect as a finding rather
than crash. Only the key method is supported:
keyless (Sigstore certificate) bundles need the network and are reported as
unsupported, which keeps the door open for a certificate verifier later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from modelguard.errors import MissingExtra, UnreadableInput, UsageError
from modelguard.files import GIT_PATHS, Entry, Kind, Listing, open_regular, walk, write_atomic
from modelguard.findings import Finding, Location, Severity
from modelguard.rules import provenance as R
from modelguard.rules.base import Rule
from modelguard.supply.hashing import hash_files
from modelguard.supply.lockfile import LOCK_NAME

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
DEFAULT_SIGNATURE_NAME = "model.sig"
SIGNATURE_SUFFIX = ".sig"  # a single file's default bundle: <file>.sig
# Evidence of the MG400 finding a verified signature gives (a digest match gives
# none), so the BOM tells the two apart without reading the message.
SIGNATURE_VERIFIED_EVIDENCE = "signature"
_CURVE_HASH = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
PathLike = str | os.PathLike[str]


def _crypto() -> Any:
    try:
        import cryptography.hazmat.primitives.serialization as serialization
    except ModuleNotFoundError:
        raise MissingExtra("signing", "supply", "cryptography") from None
    return serialization


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding of a payload."""
    header = f"DSSEv1 {len(payload_type)} {payload_type} {len(payload)} ".encode()
    return header + payload


def _pae_compat(payload: bytes) -> bytes:
    # model_signing < 1.0 signed a mis-encoded PAE; its verifier still accepts it.
    return f"DSSEV1 {len(PAYLOAD_TYPE)} {PAYLOAD_TYPE} {len(payload)} {payload!r}".encode()


def _ec_hash(curve_name: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    name = _CURVE_HASH[curve_name]
    if name == "sha384":
        return hashes.SHA384()
    if name == "sha512":
        return hashes.SHA512()
    return hashes.SHA256()


def _check_curve(key: Any, path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    public = key.public_key() if hasattr(key, "public_key") else key
    if not isinstance(public, ec.EllipticCurvePublicKey):
        kind = type(public).__name__.replace("_", "")
        raise UsageError(
            f"{path}: {kind} keys are not supported: the OpenSSF model-signing key format "
            "is verified with ECDSA only (P-256, P-384 or P-521)"
        )
    if public.curve.name not in _CURVE_HASH:
        raise UsageError(f"{path}: unsupported elliptic curve {public.curve.name}")


def _read_small(path: Path, limit: int = 1 << 20) -> bytes:
    """A key or bundle: regular files only (a FIFO would block), at most ``limit`` + 1 bytes."""
    with os.fdopen(open_regular(path), "rb") as handle:
        return handle.read(limit + 1)


def load_private_key(path: Path, password: bytes | None = None) -> EllipticCurvePrivateKey:
    serialization = _crypto()
    try:
        data = _read_small(path)
    except OSError as exc:
        raise UnreadableInput(str(path), exc.strerror or str(exc)) from None
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not a usable PEM private key: {exc}") from None
    _check_curve(key, path)
    private: EllipticCurvePrivateKey = key
    return private


def load_public_key(path: Path) -> EllipticCurvePublicKey:
    serialization = _crypto()
    try:
        data = _read_small(path)
    except OSError as exc:
        raise UnreadableInput(str(path), exc.strerror or str(exc)) from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not a PEM public key: {exc}") from None
    _check_curve(key, path)
    public: EllipticCurvePublicKey = key
    return public


def key_hint(public_key: EllipticCurvePublicKey) -> str:
    """sha256 of the PEM SubjectPublicKeyInfo, as model_signing records it."""
    serialization = _crypto()
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


# ---- manifests -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFiles:
    """The regular files of a model (name → path) and what the walk left out or refused."""

    files: dict[str, Path]
    listing: Listing | None  # None for a single file


def list_model_files(model: Path, ignore: Iterable[str]) -> ModelFiles:
    """Files of a model folder (POSIX names relative to it), or ``{".": model}`` for a file."""
    if model.is_file():
        return ModelFiles({".": model}, None)
    listing = walk([model], ignore_top=ignore)
    return ModelFiles({e.rel: e.path for e in listing.files}, listing)


def _sorted_names(names: Iterable[str]) -> list[str]:
    # model_signing orders resources by PurePosixPath (component-wise), not by string.
    return sorted(names, key=PurePosixPath)


def root_digest(resources: Iterable[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for _, digest in resources:
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


def _signature_ignore(model: Path, signature: Path) -> list[str]:
    """The bundle's own name, when it lies inside the model folder."""
    if not model.is_dir():
        return []
    try:
        return [signature.resolve().relative_to(model.resolve()).as_posix()]
    except ValueError:
        return []


# ---- signing -------------------------------------------------------------------------

_NOT_SIGNABLE = (
    Kind.PARTIAL,
    Kind.LINK_TO_FILE,
    Kind.LINK_TO_FOLDER,
    Kind.BROKEN_LINK,
    Kind.SPECIAL,
    Kind.UNREADABLE,
)


def sign_model(
    model: Path, private_key: Path, output: Path | None = None, *, password: bytes | None = None
) -> Path:
    """Sign a model file or folder; write the bundle to ``output`` (default: model.sig).

    The default bundle location is ``<folder>/model.sig`` for a folder (ignored
    by the manifest) and ``<file>.sig`` for a single file.
    """
    if not model.exists():
        raise UnreadableInput(str(model), "no such file or directory")
    key = load_private_key(private_key, password)
    if output is None:
        output = (
            model / DEFAULT_SIGNATURE_NAME
            if model.is_dir()
            else model.with_name(model.name + SIGNATURE_SUFFIX)
        )
    # The lock pins the model's files and the bundle covers them: neither covers the other,
    # so re-signing never breaks the lock and re-locking never breaks the signature.
    ignore = [*GIT_PATHS, LOCK_NAME, *_signature_ignore(model, output)] if model.is_dir() else []
    listing = list_model_files(model, ignore)
    if listing.listing is not None:
        refused = listing.listing.of(*_NOT_SIGNABLE)
        if refused:
            shown = ", ".join(f"{e.rel} ({e.kind.value})" for e in refused)
            raise UsageError(f"{model}: only regular files are signed, not: {shown}")
    digests = hash_files(listing.files.values())
    resources = [
        (name, digests[listing.files[name]]["sha256"]) for name in _sorted_names(listing.files)
    ]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model.resolve().name, "digest": {"sha256": root_digest(resources)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                **({"ignore_paths": ignore} if ignore else {}),
            },
            "resources": [
                {"name": name, "algorithm": "sha256", "digest": digest}
                for name, digest in resources
            ],
        },
    }
    payload = json.dumps(statement, indent=2).encode()
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = key.sign(pae(payload), ec.ECDSA(_ec_hash(key.curve.name)))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(key.public_key())},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    try:
        write_atomic(output, json.dumps(bundle).encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"{output}: cannot write signature: {exc.strerror or exc}") from None
    return output


def sign(
    path: PathLike,
    key: PathLike,
    *,
    output: PathLike | None = None,
    password: bytes | None = None,
) -> Path:
    """Sign a model file or folder with an ECDSA private key (PEM).

    Writes an OpenSSF model-signing compatible Sigstore bundle (verifiable with
    ``model_signing verify key``) and returns its path: by default
    ``<folder>/model.sig`` for a folder or ``<file>.sig`` for a file. Git's
    files and a ``modelguard.lock`` in the folder are left out (and listed in the
    bundle's ``ignore_paths``), so locking and signing never break each other.
    """
    return sign_model(
        Path(path), Path(key), Path(output) if output is not None else None, password=password
    )


# ---- verification --------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: the bundle is not a usable model-signing bundle (becomes MG408)."""


def _finding(rule: Rule, message: str, path: str, evidence: str | None = None) -> Finding:
    return rule.finding(message, Location(path), evidence=evidence)


def _field(mapping: object, key: str, kind: type, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise _Malformed(f"{where}: missing {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise _Malformed(f"{where}.{key}: expected {kind.__name__}")
    return value


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Malformed(f"{where}: not valid base64") from None


@dataclass(frozen=True)
class _Envelope:
    payload: bytes
    signature: bytes
    hint: str | None


def _parse_bundle(data: bytes) -> _Envelope:
    try:
        bundle = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Malformed(f"not JSON: {exc}") from None
    if not isinstance(bundle, dict):
        raise _Malformed("not a JSON object")
    media = bundle.get("mediaType")
    if media != BUNDLE_MEDIA_TYPE:
        raise _Malformed(f"media type {media!r}, expected {BUNDLE_MEDIA_TYPE}")
    material = _field(bundle, "verificationMaterial", dict, "bundle")
    if "certificate" in material or "x509CertificateChain" in material:
        raise _Malformed("certificate (keyless) bundles are not supported yet; use a key")
    public = material.get("publicKey", {})
    hint = public.get("hint") if isinstance(public, dict) else None
    if hint is not None and not isinstance(hint, str):
        raise _Malformed("verificationMaterial.publicKey.hint: expected a string")
    envelope = _field(bundle, "dsseEnvelope", dict, "bundle")
    payload_type = _field(envelope, "payloadType", str, "dsseEnvelope")
    if payload_type != PAYLOAD_TYPE:
        raise _Malformed(f"payload type {payload_type!r}, expected {PAYLOAD_TYPE}")
    payload = _b64(_field(envelope, "payload", str, "dsseEnvelope"), "dsseEnvelope.payload")
    signatures = _field(envelope, "signatures", list, "dsseEnvelope")
    if len(signatures) != 1:
        raise _Malformed(f"expected exactly one signature, found {len(signatures)}")
    sig = _b64(_field(signatures[0], "sig", str, "signatures[0]"), "signatures[0].sig")
    return _Envelope(payload, sig, hint or None)


# hash_type -> hex digest length; blake3 would need a third-party package.
_DIGEST_HEX = {"sha256": 64, "blake2b": 128}


@dataclass(frozen=True)
class _Statement:
    """The signed manifest: per file, its digest (``files``) or its shards' digests."""

    method: str  # "files" or "shards"
    hash_type: str
    shard_size: int | None
    files: dict[str, dict[tuple[int, int] | None, str]]  # file -> {shard range or None: hex}
    ignore_paths: tuple[str, ...]


def _resource_key(name: str, method: str, where: str) -> tuple[str, tuple[int, int] | None]:
    shard: tuple[int, int] | None = None
    path = name
    if method == "shards":
        path, _, rest = name.rpartition(":")
        path, _, first = path.rpartition(":")
        if not (first.isdigit() and rest.isdigit()) or int(first) > int(rest):
            raise _Malformed(f"{where}: shard name {name!r} is not path:start:end")
        shard = (int(first), int(rest))
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts:
        raise _Malformed(f"{where}: bad resource name {name!r}")
    return path, shard


def _parse_serialization(serialization: dict[str, Any]) -> tuple[str, str, int | None]:
    method = serialization.get("method")
    hash_type = serialization.get("hash_type")
    if method not in ("files", "shards") or hash_type not in _DIGEST_HEX:
        raise _Malformed(
            f"serialization method={method!r} hash_type={hash_type!r} is not supported "
            f"(modelguard verifies files or shards with {' or '.join(_DIGEST_HEX)})"
        )
    shard_size: int | None = None
    if method == "shards":
        raw = serialization.get("shard_size")
        # protobuf JSON turns integers into floats (4 -> 4.0)
        if (
            isinstance(raw, bool)
            or not isinstance(raw, (int, float))
            or raw != int(raw)
            or raw <= 0
        ):
            raise _Malformed(f"serialization.shard_size {raw!r} is not a positive integer")
        shard_size = int(raw)
    return method, hash_type, shard_size


def _parse_statement(payload: bytes) -> _Statement:
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Malformed(f"signed payload is not JSON: {exc}") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise _Malformed(f"signed payload is not an in-toto {STATEMENT_TYPE} statement")
    predicate_type = statement.get("predicateType")
    if predicate_type != PREDICATE_TYPE:
        raise _Malformed(f"predicate type {predicate_type!r}, expected {PREDICATE_TYPE}")
    subjects = _field(statement, "subject", list, "statement")
    if len(subjects) != 1:
        raise _Malformed(f"expected one subject, found {len(subjects)}")
    subject_digest = _field(
        _field(subjects[0], "digest", dict, "subject"), "sha256", str, "subject.digest"
    )
    predicate = _field(statement, "predicate", dict, "statement")
    serialization = _field(predicate, "serialization", dict, "predicate")
    method, hash_type, shard_size = _parse_serialization(serialization)
    ignore = serialization.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise _Malformed("serialization.ignore_paths: expected a list of strings")
    files: dict[str, dict[tuple[int, int] | None, str]] = {}
    in_order: list[tuple[str, str]] = []
    for index, item in enumerate(_field(predicate, "resources", list, "predicate")):
        where = f"resources[{index}]"
        name = _field(item, "name", str, where)
        algorithm = _field(item, "algorithm", str, where)
        if not algorithm.startswith(hash_type):
            raise _Malformed(f"{where}: algorithm {algorithm!r} does not match {hash_type}")
        digest = _field(item, "digest", str, where).lower()
        if len(digest) != _DIGEST_HEX[hash_type] or any(
            c not in "0123456789abcdef" for c in digest
        ):
            raise _Malformed(f"{where}: digest is not a {hash_type} hex string")
        path, shard = _resource_key(name, method, where)
        if shard in files.setdefault(path, {}):
            raise _Malformed(f"{where}: duplicate resource {name!r}")
        files[path][shard] = digest
        in_order.append((name, digest))
    # As model_signing does: the subject digest covers the resources in listed order.
    if root_digest(in_order) != subject_digest.lower():
        raise _Malformed("manifest is inconsistent: resources do not hash to the subject digest")
    return _Statement(method, hash_type, shard_size, files, tuple(ignore))


def _hash_shards(path: Path, shard_size: int, algorithm: str) -> dict[tuple[int, int] | None, str]:
    """Digest of each [start, end) shard, read once; an empty file has no shards."""
    out: dict[tuple[int, int] | None, str] = {}
    start = 0
    with os.fdopen(open_regular(path), "rb") as handle:
        while True:
            h = hashlib.new(algorithm)
            remaining = shard_size
            while remaining:
                chunk = handle.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                remaining -= len(chunk)
            end = start + shard_size - remaining
            if end == start:
                return out
            out[(start, end)] = h.hexdigest()
            start = end


def _actual_manifest(
    files: dict[str, Path], statement: _Statement
) -> dict[str, dict[tuple[int, int] | None, str]]:
    if statement.method == "files":
        digests = hash_files(files.values(), (statement.hash_type,))
        return {name: {None: digests[path][statement.hash_type]} for name, path in files.items()}
    from concurrent.futures import ThreadPoolExecutor

    size = statement.shard_size or 1
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda p: _hash_shards(p, size, statement.hash_type), files.values())
        # model_signing lists no resource for an empty file in shard mode
        return {name: shards for name, shards in zip(files, results, strict=True) if shards}


def _signature_ok(public_key: EllipticCurvePublicKey, envelope: _Envelope) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    algorithm = ec.ECDSA(_ec_hash(public_key.curve.name))
    for message in (pae(envelope.payload), _pae_compat(envelope.payload)):
        try:
            public_key.verify(envelope.signature, message, algorithm)
            return True
        except InvalidSignature:
            continue
    return False


def verify_signature(
    model: Path, bundle_path: Path, public_key_path: Path, display: str
) -> list[Finding]:
    """Check a model against a model-signing bundle; every outcome is a Finding.

    ``display`` is the model's path as reported. Raises only for problems with
    the caller's own inputs (missing model, unusable public key).
    """
    if not model.exists():
        raise UnreadableInput(display, "no such file or directory")
    public_key = load_public_key(public_key_path)
    sig_display = str(bundle_path)
    try:
        data = _read_small(bundle_path, MAX_BUNDLE_BYTES)
    except FileNotFoundError:
        return [
            _finding(
                R.UNSIGNED,
                f"no signature: {bundle_path} does not exist, so nothing vouches for {display}",
                display,
                str(bundle_path),
            )
        ]
    except OSError as exc:
        raise UnreadableInput(sig_display, exc.strerror or str(exc)) from None
    try:
        if len(data) > MAX_BUNDLE_BYTES:
            raise _Malformed(f"larger than {MAX_BUNDLE_BYTES} bytes")
        envelope = _parse_bundle(data)
    except _Malformed as exc:
        return [_finding(R.BUNDLE_MALFORMED, f"signature bundle {sig_display}: {exc}", display)]

    expected_hint = key_hint(public_key)
    if envelope.hint is not None and envelope.hint.lower() != expected_hint:
        return [
            _finding(
                R.SIGNATURE_WRONG_KEY,
                f"{sig_display} was signed by a different key (key hint {envelope.hint[:16]}…) "
                f"than {public_key_path} ({expected_hint[:16]}…)",
                display,
                envelope.hint,
            )
        ]
    if not _signature_ok(public_key, envelope):
        return [
            _finding(
                R.SIGNATURE_INVALID,
                f"signature in {sig_display} does not verify with {public_key_path}: the "
                "signed statement or the signature was altered",
                display,
            )
        ]
    try:
        statement = _parse_statement(envelope.payload)
    except _Malformed as exc:
        return [_finding(R.BUNDLE_MALFORMED, f"signature bundle {sig_display}: {exc}", display)]
    return _compare_manifest(model, bundle_path, statement, display, sig_display)


def _top_level_ignores(model: Path, bundle_path: Path, statement: _Statement) -> list[str]:
    """What verification leaves out of the comparison at the model's top level.

    As model_signing: git's files and the bundle's own ``ignore_paths``; plus the
    bundle itself and a lock file. A path the manifest lists is compared, never left out.
    """
    listed = set(statement.files)

    def signed(path: str) -> bool:
        return path in listed or any(name.startswith(path + "/") for name in listed)

    defaults = [p for p in (*GIT_PATHS, LOCK_NAME) if not signed(p)]
    return [*statement.ignore_paths, *defaults, *_signature_ignore(model, bundle_path)]


def _not_covered(
    entry: Entry, statement: _Statement, own: list[str], where: Location
) -> Finding | None:
    """The finding for a file present but outside the signed manifest (None: the bundle)."""
    if entry.rel in own:
        return None
    if entry.kind is Kind.EXCLUDED:
        if entry.rel in statement.ignore_paths:
            why = "the bundle's ignore_paths lists it"
        elif entry.rel == LOCK_NAME:
            why = "lock files are not signed"
        else:
            why = "OpenSSF model signing leaves git's files out"
        return R.FILE_UNEXPECTED.finding(
            f"{entry.rel} is present but not covered by the signature ({why})",
            where,
            evidence=entry.rel,
            severity=Severity.INFO,
        )
    if entry.kind is Kind.PARTIAL:
        return R.PARTIAL_DOWNLOAD.finding(
            f"{entry.rel} is an unfinished download, not covered by the signature",
            where,
            evidence=entry.rel,
        )
    return R.FILE_UNEXPECTED.finding(
        f"{entry.rel} is a {entry.kind.value}; signed models hold regular files only",
        where,
        evidence=entry.rel,
    )


def _compare_manifest(
    model: Path, bundle_path: Path, statement: _Statement, display: str, sig_display: str
) -> list[Finding]:
    own = _signature_ignore(model, bundle_path)
    listing = list_model_files(model, _top_level_ignores(model, bundle_path, statement))
    actual = _actual_manifest(listing.files, statement)

    def shown(name: str) -> str:
        return display if name == "." else PurePosixPath(display, name).as_posix()

    def summary(parts: dict[tuple[int, int] | None, str]) -> str:
        if None in parts:
            return parts[None]
        return f"{len(parts)} shard(s)"

    findings: list[Finding] = []
    for name in _sorted_names(statement.files):
        expected = statement.files[name]
        if name not in listing.files:
            findings.append(
                _finding(R.FILE_MISSING, f"signed file {name} is missing", shown(name), name)
            )
        elif actual.get(name, {}) != expected:
            got = actual.get(name, {})
            shards = sorted(
                k
                for k in set(expected) | set(got)
                if k is not None and expected.get(k) != got.get(k)
            )
            where = f" (first at bytes {shards[0][0]}-{shards[0][1]})" if shards else ""
            findings.append(
                _finding(
                    R.DIGEST_MISMATCH,
                    f"{name} changed after signing{where}: {statement.hash_type} "
                    f"{summary(got) if got else 'of an empty file'}, signed {summary(expected)}",
                    shown(name),
                    f"{statement.hash_type}:{summary(got)}" if got else None,
                )
            )
    for name in _sorted_names(set(listing.files) - set(statement.files)):
        if name in actual:
            findings.append(
                _finding(R.FILE_UNEXPECTED, f"{name} was added after signing", shown(name), name)
            )
            continue
        # An empty file: model signing's shard serialization leaves it out, so
        # nothing vouches for it; reported like the other paths it ignores.
        findings.append(
            R.FILE_UNEXPECTED.finding(
                f"{name} is empty and not covered by the signature (a shard-serialized "
                "manifest lists no empty file)",
                Location(shown(name)),
                evidence=name,
                severity=Severity.INFO,
            )
        )
    if listing.listing is not None:
        if listing.listing.unreadable:
            first = listing.listing.unreadable[0]
            raise UnreadableInput(first.display, f"cannot list folder: {first.note}")
        others = listing.listing.of(Kind.EXCLUDED, *_NOT_SIGNABLE)
        for entry in others:
            found = _not_covered(entry, statement, own, Location(shown(entry.rel)))
            if found is not None:
                findings.append(found)
    if not any(f.severity > Severity.INFO for f in findings):
        findings.append(
            _finding(
                R.VERIFIED,
                f"signature {sig_display} verified: "
                f"{len(actual)} file(s) match the signed manifest",
                display,
                SIGNATURE_VERIFIED_EVIDENCE,
            )
        )
    return findings
