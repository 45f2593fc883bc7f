"""Directories replaced in one step, so that a reader (or a crash) finds the complete old or the complete new one.

A new directory is built under a temporary name beside the one it replaces (`.NAME.tmp-xxxxxxxx`, tempfile's
names) and swapped in with Linux's renameat2(RENAME_EXCHANGE), called through ctypes on libc. Where the kernel
(< 3.15), the C library (glibc < 2.28) or the file system lacks it, `replace_directory` falls back to two renames:
the old directory moved away (`.NAME.old-xxxxxxxx/old`), then the new one moved in; between them there is no NAME,
and `remove_leftovers`, run at the next start, moves the old one back if a crash fell there. It also deletes the
temporary directories a crash left behind.

tempfile makes its directories 0700 (and safetensors, which writes through a temporary file, 0600 files): what is
published gets the permissions a plain mkdir/open would give under the user's umask, as save_pretrained's output
and every other output of a run have.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import sys
import tempfile

LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[a-z0-9_]{8}$")
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)  # EINVAL: the file system cannot exchange


@functools.lru_cache(maxsize=None)
def _renameat2():
    """libc's renameat2, or None off Linux or with a C library without it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def exchange(a: str, b: str) -> bool:
    """Swap two existing paths atomically; False (and nothing moved) where RENAME_EXCHANGE is not available."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), b)


def sibling(final: str, kind: str = "tmp") -> str:
    """A new empty directory beside `final`, named so that remove_leftovers knows it."""
    parent, name = os.path.split(os.path.abspath(final))
    return tempfile.mkdtemp(prefix=f".{name}.{kind}-", dir=parent)


def replace_directory(new: str, final: str) -> None:
    """`new` takes the place of `final` (if there is one, its content is deleted)."""
    if not os.path.lexists(final):
        os.rename(new, final)
        return
    if exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # `new` now names the old directory
        return
    trash = sibling(final, "old")
    os.replace(final, os.path.join(trash, "old"))
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(os.path.join(trash, "old"), final)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_modes(top: str, like: str | None = None) -> None:
    """Directories 0777 and files 0666 less the umask, under `top` (not following links); `top` itself takes the
    mode of `like`, the directory it is about to replace, when there is one."""
    mask = umask()
    os.chmod(top, os.stat(like).st_mode & 0o7777 if like and os.path.isdir(like) else 0o777 & ~mask)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, (0o777 if name in dirs else 0o666) & ~mask)


def remove_leftovers(directory: str) -> list[str]:
    """Delete the temporary directories a crash left in `directory` and, named after it, beside it; an old directory
    that a crash between the two fallback renames left moved away is first put back. Returns what was deleted."""
    target = os.path.realpath(directory)
    removed = []
    for where, only in ((target, None), (os.path.dirname(target), os.path.basename(target))):
        if not os.path.isdir(where):
            continue
        for entry in sorted(os.listdir(where)):
            match = LEFTOVER.match(entry)
            path = os.path.join(where, entry)
            if not match or (only is not None and match["name"] != only) or not os.path.isdir(path) \
                    or os.path.islink(path):
                continue
            final, old = os.path.join(where, match["name"]), os.path.join(path, "old")
            if match["kind"] == "old" and os.path.isdir(old) and not os.path.lexists(final):
                os.replace(old, final)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def link_tree(source: str, destination: str) -> None:
    """`source` again at `destination` without copying data: files hard-linked, directories rebuilt, links kept."""
    if os.path.islink(source):
        os.symlink(os.readlink(source), destination)
    elif os.path.isdir(source):
        shutil.copytree(source, destination, symlinks=True, copy_function=os.link)
    else:
        os.link(source, destination)
