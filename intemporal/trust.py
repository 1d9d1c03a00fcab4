"""Which code a journal may name: the rule `resume` applies before it loads a file.

A run's first event says where its code lives (a module, a script). A store is shared
state, so a journal may have been written by someone else: a folder a journal names is
never added to `sys.path` (see `loader._import`), and before `resume` executes a script
a journal names, the file and its folder must be

- a regular file (a folder), not a symbolic link;
- owned by the current user or root;
- not writable by others, nor by a group other than the user's own private group
  (a group of the user's name with no other member, as `useradd` makes);

and a folder holding it that others may write must be sticky (`/tmp`). Code the user
names (`--import MODULE`, `--import path/to/script.py`, `imports=[...]`) is trusted as
given. Nothing that only reads a store (`list`, `show`, `get_run`) loads code at all.
"""

from __future__ import annotations

import os
import stat


def untrusted(path: str, folder: bool = False) -> str | None:
    """Why the file (or `folder`) at `path` must not be loaded on a journal's word; None if it may."""
    if not hasattr(os, "getuid"):  # no owners to compare (Windows): the store's folder is the guard
        return None
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"it cannot be examined ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if folder and not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if not folder and not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    return _owner_and_mode(st) or (None if folder else _folder_of(path))


def _folder_of(path: str) -> str | None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(folder)
    except OSError as exc:
        return f"its folder cannot be examined ({exc.strerror or exc})"
    why = _owner_and_mode(st, sticky_ok=True)
    return f"its folder {folder}: {why}" if why else None


def _owner_and_mode(st: os.stat_result, sticky_ok: bool = False) -> str | None:
    if st.st_uid not in (os.getuid(), 0):
        return f"it is owned by uid {st.st_uid}, neither you nor root"
    shared = st.st_mode & stat.S_IWOTH or (
        st.st_mode & stat.S_IWGRP and not _private_group(st.st_gid)
    )
    if shared and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        who = "others" if st.st_mode & stat.S_IWOTH else f"group {st.st_gid}"
        return f"it is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _private_group(gid: int) -> bool:
    """Whether `gid` is the current user's own group: named after the user, with no other member."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}
