"""Files on disk: the one tree walk, one symbolic-link rule, one "leaves the folder" test.

Every verb that reads a tree (scan, lock, verify, sign) lists it with :func:`walk`,
so they agree on what a folder holds:

* A path the caller names is followed (naming a link means its target). Inside a
  folder nothing is followed: a symbolic link is listed as a link with the kind of
  its target, and each verb decides (scan reads a link to a file, because a loader
  would; lock, verify and sign hold regular files only and report links).
* Only regular files are ever opened (:func:`open_regular`): a FIFO or a device met
  in a tree is listed as special and never read, so nothing blocks on it.
* Leftover ``.modelguard-partial-*`` downloads are listed as partial, so lock and
  verify can report them instead of passing over unverified bytes.
* Default excludes (version-control and tool folders) and ``.gitignore`` apply only
  when the caller asks (scan does); a folder left out is listed once, not walked.

Names that come from hostile input (archive members, download names, external-data
locations) are judged by :func:`leaves_folder`, the single answer to "would this
name land outside its folder?".
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelguard.errors import UsageError

PathLike = str | os.PathLike[str]

# OpenSSF model signing leaves these out of a model folder's manifest (top level only).
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
# Downloads are staged under this prefix beside their final name until verified.
PARTIAL_PREFIX = ".modelguard-partial-"
# Folders no model scan wants: version control, virtual environments, tool caches.
DEFAULT_EXCLUDES = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        "_darcs",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)
ENV_CACHE_DIR = "MODELGUARD_CACHE_DIR"
_DRIVE = re.compile(r"^[A-Za-z]:")
_GIT_TIMEOUT_S = 120


class Kind(enum.Enum):
    """What a walk found at a path."""

    FILE = "file"  # a regular file (a named path may reach it through a link)
    PARTIAL = "partial"  # a regular file named .modelguard-partial-*: an unfinished download
    LINK_TO_FILE = "symbolic link to a file"
    LINK_TO_FOLDER = "symbolic link to a folder"
    BROKEN_LINK = "broken symbolic link"
    SPECIAL = "special file"  # FIFO, socket or device: never opened
    MISSING = "missing"  # a named path that does not exist
    EXCLUDED = "excluded"  # left out by an exclude; ``note`` says which
    UNREADABLE = "unreadable"  # a folder that could not be listed; ``note`` says why


@dataclass(frozen=True)
class Target:
    """A file to scan: where to read it and the name reports give it."""

    fs_path: str
    display: str
    links: tuple[str, ...] = ()  # symbolic links (as shown) that led to this file


@dataclass(frozen=True)
class Entry:
    path: Path  # as reached from the named path (not resolved)
    rel: str  # POSIX, relative to the named folder; "." for a named file
    display: str  # as reports show it (relative to the report root when inside it)
    kind: Kind
    note: str = ""  # why it was excluded, or why a folder could not be read

    @property
    def target(self) -> Target:
        return Target(fs_path=str(self.path), display=self.display)

    @property
    def is_link(self) -> bool:
        return self.kind in (Kind.LINK_TO_FILE, Kind.LINK_TO_FOLDER, Kind.BROKEN_LINK)


@dataclass(frozen=True)
class Listing:
    """Everything a walk met, in walk order (sorted names, depth first)."""

    entries: tuple[Entry, ...]

    def of(self, *kinds: Kind) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.kind in kinds)

    @property
    def files(self) -> tuple[Entry, ...]:
        return self.of(Kind.FILE)

    @property
    def partial(self) -> tuple[Entry, ...]:
        return self.of(Kind.PARTIAL)

    @property
    def links(self) -> tuple[Entry, ...]:
        """Symbolic links found inside folders, and special files anywhere."""
        return self.of(Kind.LINK_TO_FILE, Kind.LINK_TO_FOLDER, Kind.BROKEN_LINK, Kind.SPECIAL)

    @property
    def missing(self) -> tuple[Entry, ...]:
        return self.of(Kind.MISSING)

    @property
    def excluded(self) -> tuple[Entry, ...]:
        return self.of(Kind.EXCLUDED)

    @property
    def unreadable(self) -> tuple[Entry, ...]:
        return self.of(Kind.UNREADABLE)


def display_path(path: PathLike, root: Path) -> str:
    """POSIX path relative to ``root`` when inside it, else the absolute path."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        return absolute.as_posix()


def cwd_root() -> Path:
    """The default report root: the working folder."""
    return Path(os.path.abspath(Path.cwd()))


def leaves_folder(name: str) -> str | None:
    """How a relative ``name`` from hostile input would leave its folder, or None.

    Backslashes count as separators and drive letters as absolute, because the
    same name may be extracted or loaded on Windows. Empty names and NUL bytes
    are the caller's concern (they leave nothing).
    """
    normal = name.replace("\\", "/")
    if normal.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(normal):
        return "names a drive (an absolute Windows path)"
    if ".." in normal.split("/"):
        return "climbs out of its folder with '..'"
    return None


def is_under(rel: str, prefixes: Iterable[str]) -> bool:
    """True when POSIX ``rel`` is one of ``prefixes`` or lies below one."""
    pure = PurePosixPath(rel)
    return any(pure == PurePosixPath(p) or PurePosixPath(p) in pure.parents for p in prefixes)


class NotARegularFile(OSError):
    """The path is a FIFO, socket, device or folder: modelguard reads regular files only."""


def open_regular(path: PathLike, *, follow: bool = True) -> int:
    """Open a regular file for reading; raise :class:`NotARegularFile` for anything else.

    The open does not block: a FIFO would otherwise wait for a writer forever.
    With ``follow=False`` a symbolic link is refused (``ELOOP``) instead of followed.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotARegularFile(f"{os.fspath(path)}: not a regular file")
    return fd


def new_file_mode() -> int:
    """The mode a new file gets from ``open()``: 0666 minus the umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written.

    An existing file keeps its mode; a new one gets 0666 minus the umask (the
    temporary file's 0600 would otherwise stay). Raises OSError.
    """
    folder = path.parent if str(path.parent) else Path()
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def user_cache_dir() -> Path:
    """The user cache: $MODELGUARD_CACHE_DIR, $XDG_CACHE_HOME/modelguard or ~/.cache/modelguard.

    Raises:
        UsageError: MODELGUARD_CACHE_DIR is set to a relative path (it would move
            with the working folder).
    """
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        if not os.path.isabs(explicit):
            raise UsageError(f"{ENV_CACHE_DIR}={explicit!r}: expected an absolute path")
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "modelguard"


# ---- the walk ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rules:
    root: Path
    skip: frozenset[str]  # absolute paths, as os.path.abspath writes them
    ignore_top: tuple[str, ...]
    exclude: Callable[[str], bool] | None
    default_excludes: bool
    gitignore: bool


def walk(
    paths: Iterable[PathLike],
    *,
    root: Path | None = None,
    exclude: Callable[[str], bool] | None = None,
    skip: Collection[PathLike] = (),
    ignore_top: Iterable[str] = (),
    default_excludes: bool = False,
    gitignore: bool = False,
) -> Listing:
    """List files and folders (recursively) under the one link rule.

    Args:
        paths: files and folders; a named path is followed if it is a link.
        root: display paths are relative to it (default: the working folder).
        exclude: called with a display path; True leaves the entry out (named
            files included, as a policy's ``exclude`` does).
        skip: absolute paths to leave out silently (the lock file being written).
        ignore_top: POSIX paths relative to each named folder to leave out, listed
            as excluded (model signing's git paths, the signature bundle).
        default_excludes: leave out :data:`DEFAULT_EXCLUDES` folders found inside
            a named folder (never a named path itself).
        gitignore: in a git work tree, leave out what git ignores (untracked and
            matched by .gitignore, .git/info/exclude or the user's excludes file;
            a tracked file is never left out).
    """
    rules = _Rules(
        root=root or cwd_root(),
        skip=frozenset(os.path.abspath(p) for p in skip),
        ignore_top=tuple(ignore_top),
        exclude=exclude,
        default_excludes=default_excludes,
        gitignore=gitignore,
    )
    entries: list[Entry] = []
    for raw in paths:
        entries.extend(_walk_named(Path(raw), rules))
    return Listing(tuple(entries))


def _walk_named(path: Path, rules: _Rules) -> Iterator[Entry]:
    shown = display_path(path, rules.root)
    if os.path.abspath(path) in rules.skip:
        return
    try:
        info = path.stat()
    except FileNotFoundError:
        kind = Kind.BROKEN_LINK if path.is_symlink() else Kind.MISSING
        yield Entry(path, ".", shown, Kind.MISSING, note=kind.value)
        return
    except OSError as exc:
        yield Entry(path, ".", shown, Kind.UNREADABLE, note=exc.strerror or str(exc))
        return
    if stat.S_ISDIR(info.st_mode):
        ignored = _git_ignored(path) if rules.gitignore else frozenset()
        yield from _walk_folder(path, PurePosixPath(), rules, ignored)
        return
    if rules.exclude is not None and rules.exclude(shown):
        yield Entry(path, ".", shown, Kind.EXCLUDED, note="excluded by policy")
    elif stat.S_ISREG(info.st_mode):
        yield Entry(path, ".", shown, _file_kind(path.name))
    else:
        yield Entry(path, ".", shown, Kind.SPECIAL)


def _file_kind(name: str) -> Kind:
    return Kind.PARTIAL if name.startswith(PARTIAL_PREFIX) else Kind.FILE


def _walk_folder(
    folder: Path, rel_base: PurePosixPath, rules: _Rules, ignored: frozenset[str]
) -> Iterator[Entry]:
    try:
        with os.scandir(folder) as it:
            found = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        # A folder that cannot be listed is reported, never passed over as empty.
        shown = display_path(folder, rules.root)
        yield Entry(folder, rel_base.as_posix(), shown, Kind.UNREADABLE, exc.strerror or str(exc))
        return
    # Display paths by string, per folder once: thousands of files otherwise
    # cost a Path parse and relative_to each.
    folder_abs = os.path.abspath(folder)
    shown_base = display_path(folder_abs, rules.root)
    shown_prefix = "" if shown_base == "." else shown_base.rstrip("/") + "/"
    rel_prefix = "" if rel_base == PurePosixPath() else rel_base.as_posix() + "/"
    for item in found:
        path = folder / item.name
        rel = rel_prefix + item.name
        if os.path.join(folder_abs, item.name) in rules.skip:
            continue
        shown = shown_prefix + item.name
        is_dir = item.is_dir(follow_symlinks=False)
        reason = _exclusion(item.name, rel, shown, is_dir, rules, ignored)
        if reason is not None:
            yield Entry(path, rel, shown, Kind.EXCLUDED, note=reason)
        elif item.is_symlink():
            yield Entry(path, rel, shown, _link_kind(path))
        elif is_dir:
            yield from _walk_folder(path, PurePosixPath(rel), rules, ignored)
        elif item.is_file(follow_symlinks=False):
            yield Entry(path, rel, shown, _file_kind(item.name))
        else:
            yield Entry(path, rel, shown, Kind.SPECIAL)


def _exclusion(
    name: str, rel: str, shown: str, is_dir: bool, rules: _Rules, ignored: frozenset[str]
) -> str | None:
    if rel in rules.ignore_top:
        return "not part of the model (ignored at its top level)"
    if rules.default_excludes and name in DEFAULT_EXCLUDES:
        return "default exclude"
    if rules.exclude is not None and rules.exclude(shown):
        return "excluded by policy"
    if rel in ignored or (is_dir and rel + "/" in ignored):
        return "ignored by git"
    return None


def _link_kind(path: Path) -> Kind:
    try:
        info = path.stat()
    except OSError:
        return Kind.BROKEN_LINK
    if stat.S_ISDIR(info.st_mode):
        return Kind.LINK_TO_FOLDER
    return Kind.LINK_TO_FILE if stat.S_ISREG(info.st_mode) else Kind.SPECIAL


# Variables that would point git at another repository than the folder's own.
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")


def _git_ignored(folder: Path) -> frozenset[str]:
    """Paths below ``folder`` (POSIX, relative to it; folders end in "/") that git ignores.

    Empty outside a work tree, without git, or when git refuses the repository
    (another owner): scanning more is the safe side. The folder's own git
    configuration is distrusted: core.fsmonitor would run a command.
    """
    git = shutil.which("git")
    if git is None:
        return frozenset()
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    argv = [
        git,
        "-c",
        "core.fsmonitor=false",
        "-c",
        "core.untrackedCache=false",
        "--no-optional-locks",
        "--literal-pathspecs",
        "-C",
        str(folder),
    ]
    try:
        inside = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*argv, "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            env=env,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
        if inside.returncode != 0 or inside.stdout.strip() != b"true":
            return frozenset()
        listed = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*argv, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"],
            capture_output=True,
            env=env,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    if listed.returncode != 0:
        return frozenset()
    names = listed.stdout.split(b"\0")
    return frozenset(os.fsdecode(n) for n in names if n)
