"""Only regular files: open cache entries without following links or blocking on FIFOs.

The cache only ever creates regular files. Whoever else can write to ``image_cache_dir`` could
put a symlink (to make us serve a file from elsewhere), a FIFO (to hang a worker in open()), a
directory or a socket where an image, a fill or a lock file belongs. Every open here uses
``O_NOFOLLOW|O_NONBLOCK``; anything that is not a regular file is removed and logged with its
path and what it was, and the caller proceeds as if nothing had been there.
"""

import errno
import fcntl
import logging
import os
import posix
import shutil
import stat

LOG = logging.getLogger(__name__)

# open(2) errors that mean "not a regular file here": ELOOP a symlink (O_NOFOLLOW), ENXIO a
# socket (or a FIFO opened for writing), EISDIR a directory opened for writing.
_NOT_REGULAR = (errno.ELOOP, errno.ENXIO, errno.EISDIR)

_KINDS = ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "directory"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISREG, "regular file"))


def describe_mode(mode):
    """'symlink', 'FIFO', 'directory', ... for an ``st_mode``."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "file of type %o" % stat.S_IFMT(mode)


def remove_foreign(path):
    """Remove what is at ``path`` unless it is a regular file; True if something was removed.

    The cache only ever creates regular files at image paths: a symlink, FIFO, directory
    or socket there was put by someone else (it could make us serve a file from elsewhere
    or hang a worker). It is removed (a directory with its contents, never following
    links) and logged with its path and what it was.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISREG(st.st_mode):
        return False
    kind = describe_mode(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        try:
            kind = "symlink to %r" % os.readlink(path)
        except OSError:
            pass
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as err:
        LOG.error("cannot remove %s (a %s, not a cache file): %s", path, kind, err)
        return False
    LOG.warning("removed %s: a %s where the cache keeps only regular files", path, kind)
    return True


def open_regular(path, flags=os.O_RDONLY, on_foreign=None):
    """An fd on the regular file at ``path``, or None when there is none.

    Never follows a symlink and never blocks on a FIFO (O_NOFOLLOW|O_NONBLOCK; the fd is
    switched back to blocking). Anything but a regular file found at ``path`` is removed
    (``remove_foreign``), then ``on_foreign(path)`` is called.
    """
    try:
        # posix.open, not os.open: under eventlet's monkey-patching os.open tells the hub of
        # every new fd (~10 us; 12 % of a 64 KiB hit, tools/bench_hit_versions.py). A regular
        # file is never registered with the hub, like one opened with the builtin open().
        fd = posix.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno not in _NOT_REGULAR:
            raise
        _found_foreign(path, on_foreign)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        _found_foreign(path, on_foreign)
        return None
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def _found_foreign(path, on_foreign):
    if remove_foreign(path) and on_foreign is not None:
        on_foreign(path)


def is_regular_file(path):
    """True when ``path`` itself (not a symlink's target) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def open_housekeeping(path, flags=os.O_RDONLY):
    """Open or create a lock/mark file of ours; a symlink, FIFO or directory someone put
    in its place is removed first (never followed, never blocked on)."""
    for _attempt in range(3):
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o600)
        except OSError as err:
            if err.errno not in _NOT_REGULAR:
                raise
            remove_foreign(path)
            continue
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        remove_foreign(path)
    raise OSError(errno.EEXIST, "cannot create a regular file here", path)
