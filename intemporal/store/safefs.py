"""Opening the file store's files and folders without ever following a symbolic link.

A store folder may be reachable by other local users (a shared host, a folder made 0777):
a link planted where a journal, an inbox, the doorbell, a lock or a child run's folder
should be would make intemporal read, append to or truncate a file outside the store.
So below the store's own folder (which the user named, link or not) nothing is followed:

    open_file(path, flags)           O_NOFOLLOW: a link as the last component is refused
    open_folder(root, "a/b", create) walks a/b one folder at a time from `root`, each
                                     opened O_DIRECTORY | O_NOFOLLOW relative to the last
    check_trust(root, strict)        a store folder others may write to, or another user
                                     owns: a warning once, or (strict) `UnsafeStore`

A link found where a file or folder of the store should be raises `UnsafeStore` naming it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import warnings

from ..errors import UnsafeStore

#: the suffixes of a run's files in the store: its journal, its lock file, its inbox
JOURNAL, LOCK, INBOX = ".jsonl", ".lock", ".inbox"
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)  # Python opens non-inheritable anyway (PEP 446)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR, getattr(errno, "EMLINK", errno.ELOOP))
_FOLDER = os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC


def _refuse_link(name: str, dir_fd: int | None, shown: str) -> None:
    """Raise `UnsafeStore` if `name` (in `dir_fd`) is a symbolic link; else return."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeStore(shown, "is a symbolic link; the store never follows one")


def open_file(
    path: str, flags: int, mode: int = 0o600, dir_fd: int | None = None, shown: str = ""
) -> int:
    """`os.open(path, flags, mode, dir_fd=dir_fd)` that refuses a link as the file itself.

    Raises `UnsafeStore` naming `shown` (else `path`) when the file is a symbolic link; any
    other `OSError` (`FileNotFoundError`, ...) as `os.open` raises it.
    """
    try:
        return os.open(path, flags | NOFOLLOW | CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            _refuse_link(path, dir_fd, shown or path)
        raise


def open_folder(root: str, rel: str, create: bool = False) -> int:
    """A descriptor of folder `root/rel`, `rel`'s folders ("a/b") opened one by one, no link followed.

    `create`: missing folders are made, each private (0700). Raises `UnsafeStore` when one
    of them is a symbolic link, `FileNotFoundError` when one is missing (without `create`),
    `NotADirectoryError` when one is a file. The caller closes the descriptor.
    """
    fd = os.open(root, os.O_RDONLY | DIRECTORY | CLOEXEC)
    shown = root
    try:
        for part in rel.split("/") if rel else ():
            shown = os.path.join(shown, part)
            try:
                sub = os.open(part, _FOLDER, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # made meanwhile by another
                    os.mkdir(part, 0o700, dir_fd=fd)
                sub = open_file(part, _FOLDER, 0, fd, shown)
            except OSError as exc:
                if exc.errno in _LINK_ERRNOS:
                    _refuse_link(part, fd, shown)
                raise
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_in(root: str, rel: str, flags: int, mkdirs: bool = False) -> int:
    """A descriptor of the file `root/rel` (`rel` like `a/b.jsonl`), no link followed below `root`.

    A symbolic link where the file or one of its folders should be raises `UnsafeStore`
    naming it. `mkdirs`: missing folders are made (0700); a file created is 0600.
    """
    folder, _, name = rel.rpartition("/")
    if not folder:  # one call: the store's own folder is the user's to name, link or not
        return open_file(os.path.join(root, rel), flags)
    dfd = open_folder(root, folder, mkdirs)
    try:
        return open_file(name, flags, 0o600, dfd, os.path.join(root, rel))
    finally:
        os.close(dfd)


def unlink_in(root: str, rel: str) -> None:
    """Remove the file `root/rel`; a link as the file is removed itself, one in its folders refused."""
    folder, _, name = rel.rpartition("/")
    dfd = open_folder(root, folder)
    try:
        os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)


def remove_folder(root: str, parent: str, name: str) -> None:
    """Remove the empty folder `root/parent/name` (`OSError` if not empty, or not a folder)."""
    dfd = open_folder(root, parent)
    try:
        os.rmdir(name, dir_fd=dfd)
    finally:
        os.close(dfd)


def prune_folders(root: str, path: str) -> None:
    """Remove the folders above `path` (a `/`-separated name under `root`) left empty, the
    deepest first: a deleted child run's folder, and its parents' if empty too."""
    parts = path.split("/")[:-1]
    while parts:
        try:
            remove_folder(root, "/".join(parts[:-1]), parts[-1])
        except FileNotFoundError:
            pass
        except OSError:  # not empty (another run's files), or not a folder
            return
        parts.pop()


_warned: set[str] = set()
_warned_lock = threading.Lock()


def untrusted_reason(root: str) -> str | None:
    """Why the store folder `root` may be tampered with by others, or None if only its owner can.

    Group- or other-writable, or owned by another user than this process's.
    """
    if os.name != "posix":
        return None
    st = os.stat(root)
    reasons = []
    writable = st.st_mode & 0o022
    if writable:
        who = {0o020: "group", 0o002: "others"}.get(writable, "group and others")
        reasons.append(f"is writable by {who}")
    if st.st_uid != os.geteuid():
        reasons.append(f"is owned by another user (uid {st.st_uid})")
    if not reasons:
        return None
    return " and ".join(reasons) + f" (mode {st.st_mode & 0o7777:o})"


def check_trust(root: str, strict: bool) -> None:
    """Warn once per process (a `UserWarning`) if others may tamper with the store at `root`.

    With `strict`, raise `UnsafeStore` instead. Only the store's own folder is checked: the
    files and folders below it are created private (0600, 0700) and opened without links.
    """
    reason = untrusted_reason(root)
    if reason is None:
        return
    if strict:
        raise UnsafeStore(root, reason + "; strict mode refuses such a store")
    with _warned_lock:
        if root in _warned:
            return
        _warned.add(root)
    warnings.warn(
        f"the store {root} {reason}: another local user could plant files in it; "
        f"`chmod 700` it (and own it), or use strict=True / `intemporal --strict` to refuse it",
        UserWarning,
        stacklevel=4,
    )
