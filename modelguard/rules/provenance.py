"""MG4xx: provenance rules (digests, lock files, signatures, downloads)."""

from __future__ import annotations

from modelguard.findings import Severity
from modelguard.rules.base import Rule

VERIFIED = Rule(
    "MG400",
    "provenance-verified",
    Severity.INFO,
    "The artifact matches its expected digest or signature.",
    "The bytes on disk hash to the digest recorded by the lock file, the source "
    "(Hub LFS sha256, zoo readme sha1, --sha256) or a verified signature.",
    "No action needed.",
    ("provenance",),
)
DIGEST_MISMATCH = Rule(
    "MG401",
    "digest-mismatch",
    Severity.CRITICAL,
    "The artifact's digest differs from the expected one.",
    "The bytes are not the bytes that were pinned, published or signed: the file "
    "was modified, corrupted in transit, or the server returned a different file. "
    "A fetched file with a mismatch is never placed at the destination.",
    "Do not use the file. Fetch it again from the pinned source; if the mismatch "
    "persists, the source itself changed: investigate before updating the pin.",
    ("security", "provenance", "integrity"),
)
FILE_MISSING = Rule(
    "MG402",
    "file-missing",
    Severity.HIGH,
    "A file recorded in the lock file or signature is missing.",
    "The locked or signed model had this file and the copy on disk does not. "
    "A renamed file shows as one missing and one unexpected file.",
    "Restore the file from the pinned source, or re-lock / re-sign if the removal was intended.",
    ("provenance", "integrity"),
)
FILE_UNEXPECTED = Rule(
    "MG403",
    "file-unexpected",
    Severity.HIGH,
    "A file is present that the lock file or signature does not list.",
    "Like pip's --require-hashes, every file must be accounted for: a file added "
    "after locking or signing may be loaded by the model's code (custom modules, "
    "extra weights, config pointing elsewhere).",
    "Remove the file, or re-lock / re-sign if it was added on purpose.",
    ("security", "provenance"),
)
SIZE_MISMATCH = Rule(
    "MG404",
    "size-mismatch",
    Severity.HIGH,
    "The artifact's size differs from the recorded size.",
    "The file was truncated, extended or replaced since it was locked.",
    "Fetch the file again from the pinned source.",
    ("provenance", "integrity"),
)
UNSIGNED = Rule(
    "MG405",
    "unsigned",
    Severity.HIGH,
    "A signature was required but none was found.",
    "The signature bundle named (or the default model.sig) does not exist, so "
    "nothing vouches for who produced the model.",
    "Obtain the signature bundle from the publisher, or sign the model with `modelguard sign`.",
    ("security", "provenance"),
)
SIGNATURE_INVALID = Rule(
    "MG406",
    "signature-invalid",
    Severity.CRITICAL,
    "The signature does not verify over the bundle's signed statement.",
    "The DSSE envelope's payload or signature was altered after signing, or it "
    "was signed by a different key than the bundle claims.",
    "Do not trust the model or its manifest; obtain a fresh bundle from the publisher.",
    ("security", "provenance"),
)
SIGNATURE_WRONG_KEY = Rule(
    "MG407",
    "signature-wrong-key",
    Severity.CRITICAL,
    "The bundle was signed with a different key than the one given.",
    "The bundle's public-key hint (sha256 of the signer's PEM public key) does not "
    "match the trusted public key, so the signer is not who you expect.",
    "Verify with the publisher's public key, or obtain a bundle they signed.",
    ("security", "provenance"),
)
BUNDLE_MALFORMED = Rule(
    "MG408",
    "signature-bundle-malformed",
    Severity.HIGH,
    "The signature bundle cannot be read or is not a model-signing bundle.",
    "The file is not JSON, is not a Sigstore bundle with a DSSE envelope, carries "
    "an unexpected payload or predicate type, its manifest is inconsistent with "
    "its own root digest, or it uses a serialization modelguard does not support.",
    "Re-create the bundle with `modelguard sign` or `model_signing sign key`.",
    ("security", "provenance", "integrity"),
)
UNPINNED_DOWNLOAD = Rule(
    "MG409",
    "unpinned-download",
    Severity.MEDIUM,
    "The artifact was fetched without an expected digest to check it against.",
    "The source published no digest (a plain URL without --sha256, a Hub file "
    "without LFS metadata), so the download is trusted on first use only. Its "
    "digest is recorded so later fetches can be checked.",
    "Pass --sha256/--sha1 with the publisher's digest, or pin the file in a lock file.",
    ("provenance",),
)
NOT_LOCKED = Rule(
    "MG410",
    "lock-entry-stale",
    Severity.LOW,
    "The lock file entry lacks a digest modelguard can check.",
    "The entry records neither sha256 nor sha1, so the file cannot be verified.",
    "Re-create the entry with `modelguard lock`.",
    ("provenance",),
)

RULES: tuple[Rule, ...] = (
    VERIFIED,
    DIGEST_MISMATCH,
    FILE_MISSING,
    FILE_UNEXPECTED,
    SIZE_MISMATCH,
    UNSIGNED,
    SIGNATURE_INVALID,
    SIGNATURE_WRONG_KEY,
    BUNDLE_MALFORMED,
    UNPINNED_DOWNLOAD,
    NOT_LOCKED,
)
