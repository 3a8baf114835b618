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
    "extra weights, config pointing elsewhere). Files that lock files or OpenSSF model "
    "signing leave out by default (git's files at the top of the folder, signature "
    "bundles, a lock file, empty files in a shard manifest) are reported at info "
    "severity; symbolic links and special files at high.",
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

PARTIAL_DOWNLOAD = Rule(
    "MG411",
    "partial-download",
    Severity.HIGH,
    "An unfinished download (.modelguard-partial-*) is present.",
    "fetch stages bytes in a hidden .modelguard-partial-* file beside the final name "
    "and removes it when the download fails or the process is stopped; only a process "
    "killed outright (SIGKILL, a crash) leaves one. Its bytes were never verified or "
    "scanned, and a tool that globs the folder may still load them.",
    "Delete the file and fetch again.",
    ("security", "provenance", "integrity"),
)
POLICY_IN_CHECKED_TREE = Rule(
    "MG412",
    "policy-in-checked-tree",
    Severity.MEDIUM,
    "A policy file inside the checked tree was ignored.",
    "A pyproject.toml inside the folder being scanned, verified or fetched into could "
    "lower fail-on, exclude files or ignore rules for the very files it ships with, so "
    "modelguard never takes its policy from there; discovery goes on above the tree.",
    "Keep the policy outside the checked tree, or pass it explicitly with --config.",
    ("security", "provenance", "policy"),
)
DOWNLOAD_REDIRECTED = Rule(
    "MG413",
    "download-redirected",
    Severity.INFO,
    "The download was redirected; every hop is listed.",
    "The URL asked for answered with redirects (often to a CDN). The message lists "
    "every URL visited, so the report names where the bytes really came from. A "
    "redirect from https to plain http is refused unless plain http is allowed.",
    "No action needed; pin the digest if the final host is not one you trust.",
    ("provenance",),
)
UNSAFE_FILE_NAME = Rule(
    "MG414",
    "unsafe-file-name",
    Severity.HIGH,
    "The source names a file modelguard refuses to place.",
    "A name that climbs out of the destination, contains control characters (a newline "
    "forges report lines) or lies inside a .git folder (git runs its hooks and "
    "configuration) is never placed, and nothing else from the source is either. "
    "Dotfiles, policy files (pyproject.toml, modelguard.lock) and hook files "
    "(conftest.py, sitecustomize.py, *.pth) are left out unless dotfiles are allowed; "
    "those are reported at info severity.",
    "Do not use a source that names such files; allow dotfiles only for a source you trust.",
    ("security", "provenance"),
)
OVERWRITE_REFUSED = Rule(
    "MG415",
    "overwrite-refused",
    Severity.HIGH,
    "Fetching would replace a file modelguard did not place, or place through a link.",
    "fetch replaces a file only when it holds bytes modelguard placed there itself "
    "(recorded in the lock file or in modelguard's own record of placed files) or the "
    "very bytes being fetched; anything else at the destination is the user's and is "
    "left alone, and nothing is ever written through a symbolic link.",
    "Fetch into another folder, or pass --force to replace the file.",
    ("security", "provenance"),
)
REMOTE_SCAN_BASIS = Rule(
    "MG416",
    "remote-scan-basis",
    Severity.INFO,
    "What a remote scan read, and the digest it vouches for.",
    "A remote scan reads a file by HTTP range requests when the server allows it, and "
    "then cannot know the digest of the whole file: it vouches only for the bytes the "
    "server chose to send it, identified by the ETag and, on the Hub, the LFS sha256 "
    "the metadata publishes. A file read whole is identified by the sha256 of the "
    "bytes read. A server can show a scanner other bytes than a loader (cloaking); "
    "only bytes fetched, hashed and scanned together, as fetch does, are proven.",
    "To use exactly what was scanned, fetch it with modelguard fetch (pinning the "
    "digest this finding names) and check it with modelguard verify.",
    ("provenance",),
)
INSECURE_REDIRECT = Rule(
    "MG417",
    "insecure-redirect",
    Severity.HIGH,
    "A redirect led from https to plain http or to another scheme.",
    "Anyone on the network path can change bytes sent over plain http, so a download "
    "that started over https must not continue over http. Nothing was placed or scanned.",
    "Ask the publisher for an https location, or allow plain http for a host you trust.",
    ("security", "provenance"),
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
    PARTIAL_DOWNLOAD,
    POLICY_IN_CHECKED_TREE,
    DOWNLOAD_REDIRECTED,
    UNSAFE_FILE_NAME,
    OVERWRITE_REFUSED,
    REMOTE_SCAN_BASIS,
    INSECURE_REDIRECT,
)
