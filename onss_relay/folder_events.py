"""Names added to and removed from a few folders, from Linux's inotify, read without waiting: what changed in a
folder since it was listed, without listing it again.

The kernel queues an event while the call that made the change runs (a rename, link or create returns after its
event is queued), so a name put into a watched folder before ``changes()`` is called is in what it returns. A
folder whose events cannot be trusted (the queue overflowed, the folder was moved or deleted, the watch could not be
added) is reported stale: the caller lists it again in full. Where inotify is not available (not Linux, the user's
128 instances or its watches used up), ``watch`` says so and the caller lists the folder at each look, as it would
without this module.

Only folders on a filesystem whose every change goes through this machine's kernel are watched (ext4, XFS, Btrfs,
tmpfs, overlayfs, F2FS): on NFS, SMB or a FUSE or 9p/virtiofs share, inotify sees only what this machine did,
and a file put there from another machine (a GO restored by hand from an admin's desktop) would never be an event.
There, and on any filesystem not known, ``watch`` says no. ZFS is left out: a rollback or a `zfs receive -F`
changes a folder's names with no event and keeps its inode (review rev14).

A process forked after the instance was opened must not read it (the parent's events would go to whichever reads
first): the first call in another process closes its inherited copy and watches nothing (``watching`` says False,
so the caller lists each folder again, and ``watch`` opens an instance of its own).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import weakref
from pathlib import Path

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
ADDED = IN_CREATE | IN_MOVED_TO
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED  # the watch no longer says what the path holds
# statfs() f_type of the filesystems where every change is made by this kernel (linux/magic.h), by name
LOCAL_FILESYSTEMS = {
    0xEF53: "ext2/3/4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlayfs",
    0xF2F52010: "f2fs",
}
HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name, NUL-padded
READ_SIZE = 1 << 16


def _load_libc() -> ctypes.CDLL | None:
    """The C library, if it has inotify (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1  # noqa: B018 (AttributeError: not Linux)
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


def _checked(result: int, *filename: str) -> int:
    """Given a C call's result, return it, or raise its errno as an OSError (naming the file given) when negative."""
    if result < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), *filename)
    return int(result)


def _init() -> int:
    if _libc is None:
        raise OSError(errno.ENOSYS, "inotify is not available")
    return _checked(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))


def _add_watch(fd: int, folder: Path) -> int:
    assert _libc is not None
    return _checked(_libc.inotify_add_watch(fd, os.fsencode(folder), ctypes.c_uint32(MASK)), str(folder))


def local_filesystem(folder: Path) -> str | None:
    """Given a folder, return the name of its filesystem if every change to it is made by this machine's kernel
    (LOCAL_FILESYSTEMS), else None (a network or FUSE share, one not known, or statfs failed)."""
    if _libc is None:
        return None
    buf = ctypes.create_string_buffer(256)  # struct statfs: f_type, a long, comes first
    if _libc.statfs(os.fsencode(folder), buf) != 0:
        return None
    f_type = struct.unpack_from("l", buf.raw)[0] & 0xFFFFFFFF
    return LOCAL_FILESYSTEMS.get(f_type)


class FolderEvents:
    """Given the prefix of the names wanted, watch folders (``watch``) and tell which such names were added to
    each and which folders must be listed again (``changes``); ``close`` frees the instance (so does garbage
    collection)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = os.fsencode(prefix)
        self._fd: int | None = None
        self._pid = 0
        self._closer: weakref.finalize[[int], FolderEvents] | None = None
        self._unavailable = False
        self._by_wd: dict[int, Path] = {}
        self._wd_of: dict[Path, int] = {}

    def watch(self, folder: Path) -> bool:
        """Given a folder, watch it (from now on: the folder its path names now) and return True; False if it
        cannot be (the caller lists it at each look). Call before listing it: a name added during the listing is
        then in both."""
        self._own()
        if local_filesystem(folder) is None:  # a share: what other machines put there is no event here
            self.unwatch(folder)  # (a share mounted where a local folder was watched)
            return False
        if self._fd is None and not self._unavailable:
            try:
                self._fd = _init()
            except OSError:
                self._unavailable = True  # e.g. EMFILE: fs.inotify.max_user_instances used up by other programs
            else:
                self._pid = os.getpid()
                self._closer = weakref.finalize(self, os.close, self._fd)
        if self._fd is None:
            return False
        # added again when watched already: the path may name another folder now (an ancestor moved aside and
        # restored, a symlink retargeted), and the watch must be on the one about to be listed (the same folder
        # gives the same wd back)
        old = self._wd_of.get(folder)
        try:
            wd = _add_watch(self._fd, folder)
        except OSError:  # gone, not a folder, not readable, or fs.inotify.max_user_watches reached
            self.unwatch(folder)
            return False
        if old is not None and old != wd:
            self.unwatch(folder)
        self._by_wd[wd] = folder
        self._wd_of[folder] = wd
        return True

    def watching(self, folder: Path) -> bool:
        """Given a folder, whether its events are read (False once it went away, and in a forked process)."""
        self._own()
        return folder in self._wd_of

    def unwatch(self, folder: Path) -> None:
        """Given a folder, stop watching it (nothing if it was not watched)."""
        self._own()
        wd = self._wd_of.pop(folder, None)
        if wd is not None and self._fd is not None:
            del self._by_wd[wd]
            assert _libc is not None
            _libc.inotify_rm_watch(self._fd, wd)  # EINVAL if the kernel removed it already: nothing to do

    def changes(self) -> tuple[dict[Path, list[str]], set[Path]]:
        """Return, since the last call, the names added to each watched folder (those starting with the prefix
        given), and the folders whose events cannot say what they hold now (a name went away, the folder was moved
        or deleted, events were lost): those are no longer watched when gone, and are to be listed again in full."""
        self._own()
        added: dict[Path, list[str]] = {}
        stale: set[Path] = set()
        while self._fd is not None:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            self._events(data, added, stale)
        return added, stale

    def _events(self, data: bytes, added: dict[Path, list[str]], stale: set[Path]) -> None:
        """Given what one read returned, add each event to added or stale (a day of archives is tens of thousands
        of names added, nearly all of them not the prefix's: those are passed over first, and cheaply)."""
        unpack, header, prefix, by_wd = HEADER.unpack_from, HEADER.size, self.prefix, self._by_wd
        at, end = 0, len(data)
        while at < end:
            wd, mask, _cookie, size = unpack(data, at)
            start, at = at + header, at + header + size
            if mask & ADDED:
                folder = by_wd.get(wd)
                if folder is not None and data.startswith(prefix, start):
                    added.setdefault(folder, []).append(os.fsdecode(data[start:at].rstrip(b"\0")))
            elif mask & IN_Q_OVERFLOW:
                stale.update(self._wd_of)
            elif (folder := by_wd.get(wd)) is None:
                continue  # a watch removed since (unwatch): its last events
            elif mask & GONE:
                stale.add(folder)
                self.unwatch(folder)
            else:  # a name deleted or moved away
                stale.add(folder)

    def close(self) -> None:
        """Stop watching everything and free the instance."""
        self._own()
        if self._closer is not None:
            self._closer()
        self._closer, self._fd = None, None
        self._by_wd.clear()
        self._wd_of.clear()

    def _own(self) -> None:
        """In a process forked since the instance was opened: close the inherited copy, watch nothing (the
        caller lists what it asks for again, as ``watching`` now says False)."""
        if self._fd is not None and self._pid != os.getpid():
            assert self._closer is not None
            self._closer.detach()  # the parent's finalizer must never close a number this process reuses
            os.close(self._fd)
            self._closer, self._fd = None, None
            self._by_wd.clear()
            self._wd_of.clear()
