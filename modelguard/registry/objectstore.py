"""Object stores (``s3://``, ``gs://``) through fsspec: listing, identity, ranged reads.

The listing names every object with its ETag/generation, so an unchanged object
is answered from the results store without a byte read. A scan opens the object
(one metadata request), checks it is still the object listed, and reads it by
ranges pinned to that version: s3fs sends ``If-Match`` with the ETag, so an
object replaced mid-scan fails the read instead of being scanned as a mix.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Mapping
from typing import Any

from modelguard.errors import FetchError, MissingExtra, UsageError
from modelguard.registry.artifacts import Artifact
from modelguard.registry.filters import Filters

# scheme -> (fsspec protocol, implementing module, modelguard extra)
SCHEMES: dict[str, tuple[str, str, str]] = {
    "s3://": ("s3", "s3fs", "s3"),
    "gs://": ("gs", "gcsfs", "gcs"),
}


def is_object_store(source: str) -> bool:
    return source.startswith(tuple(SCHEMES))


def protocol_of(source: str) -> str:
    """The fsspec protocol of an object-store source (``s3://b/k`` -> ``s3``)."""
    return next(
        protocol for scheme, (protocol, _, _) in SCHEMES.items() if source.startswith(scheme)
    )


def filesystem(protocol: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem for ``protocol`` (instances are cached per process by fsspec)."""
    scheme = f"{protocol}://"
    _, module, extra = SCHEMES[scheme]
    if importlib.util.find_spec("fsspec") is None or importlib.util.find_spec(module) is None:
        raise MissingExtra(f"scanning {scheme} sources", extra, module)
    import fsspec

    return fsspec.filesystem(protocol, **dict(storage_options or {}))


def _modified(info: Mapping[str, Any]) -> str:
    value = info.get("LastModified", info.get("updated", info.get("mtime")))
    if isinstance(value, dt.datetime):
        return str(value.timestamp())
    return "" if value is None else str(value)


def object_identity(protocol: str, path: str, info: Mapping[str, Any]) -> str | None:
    """An object's identity: its path with the store's version markers.

    Always with the path: an S3 ETag is an MD5 (collisions can be made) or a
    digest of part digests, so it never stands for content on its own. The
    last-modified time is kept too, set by the store on every write.
    """
    version = object_version(info)
    if version is None:
        return None
    return f"{protocol}:{path}:{version}:modified={_modified(info)}"


def object_version(info: Mapping[str, Any]) -> str | None:
    """What changes whenever the object's bytes do (ETag, version id, generation, size).

    A worker compares it with the listing's before it reads: a result for a
    version the listing did not see is not stored under the listing's identity.
    """
    parts = []
    for key in ("ETag", "etag", "VersionId", "generation", "md5Hash"):
        value = info.get(key)
        if value:
            parts.append(f"{key.lower()}={value}")
    if not parts:
        return None
    return ":".join(parts) + f":size={info.get('size')}"


def _group(scheme: str, base: str, relative: str) -> str:
    """The summary group: the source prefix plus the first folder below it."""
    head, sep, _ = relative.partition("/")
    root = f"{scheme}{base.rstrip('/')}"
    return f"{root}/{head}" if sep else root


def list_objects(
    source: str, filters: Filters, storage_options: Mapping[str, Any] | None = None
) -> list[Artifact]:
    """Every object below ``scheme://bucket/prefix``, with the identity the listing gives.

    Raises:
        UsageError: the source names no bucket.
        FetchError: the store refused or failed the listing.
        MissingExtra: the fsspec implementation is not installed.
    """
    protocol = protocol_of(source)
    scheme = f"{protocol}://"
    base = source[len(scheme) :].strip("/")
    if not base:
        raise UsageError(f"{source}: expected {scheme}bucket[/prefix]")
    fs = filesystem(protocol, storage_options)
    try:
        fs.invalidate_cache(base)  # a long-lived process must see today's objects
        if fs.isfile(base):
            found = {base: fs.info(base)}
            base = base.rsplit("/", 1)[0] if "/" in base else base
        else:
            found = fs.find(base, detail=True)
    except (OSError, ValueError) as exc:
        raise FetchError(f"{source}: cannot list the objects: {exc}") from None
    artifacts = []
    for path in sorted(found):
        info = found[path]
        if info.get("type", "file") != "file":
            continue
        relative = path[len(base) :].lstrip("/") if path.startswith(base) else path
        if not filters.accepts(relative or path, ()):
            continue
        artifacts.append(
            Artifact(
                display=f"{scheme}{path}",
                group=_group(scheme, base, relative),
                kind="fsspec",
                location=path,
                protocol=protocol,
                identity=object_identity(protocol, path, info),
                size=info.get("size"),
                version=object_version(info),
            )
        )
    return artifacts
