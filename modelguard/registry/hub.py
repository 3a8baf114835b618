"""The Hugging Face Hub at registry scale: every repository of an owner, and their files.

``hf://ORG`` is listed through huggingface_hub's ``list_models`` (paginated by
the Hub's ``Link`` headers, with huggingface_hub's own back-off on 429), which
also names each repository's current commit. A repository is then resolved to
its files with their LFS sha256 or git blob ids by ``model_info`` — one
metadata request, made by a worker, paced and retried by this process's
throttle. Nothing here reads a model byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from modelguard.errors import FetchError, UsageError
from modelguard.registry.artifacts import Artifact, RepoRef, Resolved, hub_identity
from modelguard.registry.filters import Filters
from modelguard.remote.throttle import Throttle, parse_retry_after
from modelguard.supply import hub as supply_hub
from modelguard.supply.hub import HF_SCHEME
from modelguard.supply.sources import name_problem

_OWNER = re.compile(r"^[A-Za-z0-9][\w.\-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_module() -> Any:
    """huggingface_hub, or MissingExtra naming the extra that installs it."""
    return supply_hub.require_hub("scanning hf:// sources")


def _errors() -> tuple[type[BaseException], ...]:
    return supply_hub._hub_errors(hub_module())


def is_owner_source(source: str) -> bool:
    """``hf://ORG``: an owner (user or organisation), not one repository."""
    rest = source[len(HF_SCHEME) :].strip("/") if source.startswith(HF_SCHEME) else ""
    return bool(rest) and "/" not in rest and "@" not in rest


def repo_ref(source: str) -> RepoRef:
    """``hf://owner/repo[@revision][/path]`` as a repository to resolve."""
    parsed = supply_hub.parse_hf(source)
    return RepoRef(parsed.repo, parsed.revision, parsed.path, group=parsed.repo.split("/")[0])


def list_owner(source: str, filters: Filters, endpoint: str, token: str | None) -> list[RepoRef]:
    """Every model repository of ``hf://ORG`` that passes ``filters``.

    Raises:
        UsageError: the owner name is malformed.
        FetchError: the Hub refused or failed the listing.
    """
    owner = source[len(HF_SCHEME) :].strip("/")
    if not _OWNER.match(owner):
        raise UsageError(f"{source}: expected hf://OWNER or hf://owner/repo[@revision][/path]")
    hub = hub_module()
    api = hub.HfApi(endpoint=endpoint, token=token)
    tags = list(filters.tags) or None
    refs: list[RepoRef] = []
    try:
        for model in _models(api, owner, tags):
            if model.id.split("/")[0] != owner or not filters.accepts(model.id, model.tags or ()):
                continue
            commit = model.sha if isinstance(model.sha, str) and _COMMIT.match(model.sha) else None
            refs.append(RepoRef(model.id, None, None, group=owner, commit=commit))
    except hub.utils.HfHubHTTPError as exc:
        raise FetchError(f"{source}: the Hub refused the listing: {exc}") from None
    except _errors() as exc:
        raise FetchError(f"{source}: cannot reach the Hub at {endpoint}: {exc}") from None
    return refs


def _models(api: Any, owner: str, tags: list[str] | None) -> Iterator[Any]:
    # full=True: the listing then carries each repository's commit sha, so an
    # unchanged repository needs no metadata request of its own.
    yield from api.list_models(author=owner, filter=tags, full=True)


def retry_verdict(exc: BaseException) -> float | bool:
    """For the throttle: retry 429/5xx (after Retry-After) and transport failures."""
    hub = hub_module()
    if isinstance(exc, hub.utils.HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if response is not None and (status == 429 or (isinstance(status, int) and status >= 500)):
            asked = parse_retry_after(response.headers.get("Retry-After"))
            return True if asked is None else asked
        return False
    return isinstance(exc, _errors()) and not isinstance(exc, hub.utils.EntryNotFoundError)


def resolve_repo(ref: RepoRef, endpoint: str, token: str | None, throttle: Throttle) -> Resolved:
    """The repository's files at one commit, each with its Hub-vouched identity.

    Every file is listed (``ref.path`` is applied by the caller), so the list can
    be kept per commit and reused for any path.
    """
    hub = hub_module()
    source = f"{HF_SCHEME}{ref.repo}" + (f"@{ref.revision}" if ref.revision else "")
    api = hub.HfApi(endpoint=endpoint, token=token)

    def info() -> Any:
        return api.model_info(ref.repo, revision=ref.revision, files_metadata=True)

    try:
        model = throttle.call(endpoint, info, retry_verdict)
    except hub.utils.HfHubHTTPError as exc:
        return Resolved(source, error=f"the Hub refused the metadata request: {exc}")
    except _errors() as exc:
        return Resolved(source, error=f"cannot reach the Hub at {endpoint}: {exc}")
    commit = model.sha
    if not isinstance(commit, str) or not _COMMIT.match(commit):
        return Resolved(source, error="the Hub did not resolve the revision to a commit sha")
    parsed = supply_hub.HfSource(ref.repo, commit, None)
    artifacts = []
    for sibling in model.siblings or []:
        name = sibling.rfilename
        # The Hub's record of the file: its digest, and who vouches for it.
        published = supply_hub._hf_remote(parsed, commit, name, sibling)
        problem = name_problem(published.name)
        artifacts.append(
            Artifact(
                display=published.source if problem is None else ascii(published.source)[1:-1],
                group=ref.group,
                kind="http",
                location=hub.hf_hub_url(ref.repo, name, revision=commit, endpoint=endpoint),
                identity=hub_identity(
                    published.expected.get("sha256"),
                    published.expected.get("git-blob-sha1"),
                    published.size,
                ),
                size=published.size,
                hub=True,
                expected=tuple(sorted(published.expected.items())),
                vouched_by=published.vouched_by,
                problem=None if problem is None else f"the Hub lists a file whose name {problem}",
            )
        )
    return Resolved(source, tuple(artifacts), commit=commit)


def below(artifacts: tuple[Artifact, ...], ref: RepoRef) -> tuple[Artifact, ...]:
    """The files of ``ref.path`` (a file or a folder), or all files without one."""
    if not ref.path:
        return artifacts
    wanted = ref.path.strip("/")
    return tuple(
        a
        for a in artifacts
        if (name := _file_name(a.display)) == wanted or name.startswith(wanted + "/")
    )


def _file_name(display: str) -> str:
    """The path inside the repository of ``hf://owner/repo@commit/path``."""
    return display.split("@", 1)[1].split("/", 1)[1]
