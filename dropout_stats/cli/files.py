"""Output files: every report and plot path is checked before the work starts, and written whole
or not at all.

``check_output`` refuses, with one line naming the option and its value, a path that cannot
take a file: an empty one, a folder, a path in a missing folder or under a file, an existing
device node, FIFO or socket (never replaced, never written into), a read-only file, a name the
file system refuses, a folder this process cannot create files in.  A symlink is followed to its
target, and the "wrote" line says so.

``replace_atomically`` writes a temporary file beside the target (``.dropout-stats-PID-XXXX.tmp``),
fsyncs it, gives it the mode (and, where allowed, the owner) of the file it replaces, or open()'s
mode for a new one, and renames it onto the target: a reader sees the old file or the new one,
never half of one.  An exception or a handled signal (SIGINT, SIGTERM) removes the temporary
file; one left by a killed process (SIGKILL, power loss) is removed by the next run that writes
into that folder, once its process is gone.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from dataclasses import dataclass

from ._common import UsageError

TEMP_PREFIX = ".dropout-stats-"
_TEMP_NAME = re.compile(r"^\.dropout-stats-(\d+)-[A-Za-z0-9_]+\.tmp$")


@dataclass(frozen=True)
class Target:
    """Where a report goes: ``path`` as given, ``real`` the file written (a symlink's target),
    ``mode`` the permissions to keep (None: a new file, open()'s mode under the umask)."""

    path: str
    option: str
    real: str
    mode: int | None = None
    owner: tuple[int, int] | None = None
    linked: bool = False

    @property
    def folder(self) -> str:
        return os.path.dirname(self.real) or "."

    def wrote(self) -> str:
        """The line that says where the file went (a symlink's target named)."""
        from ._common import one_line

        if self.linked:
            return one_line(f"wrote {self.path} (a symlink: wrote its target {self.real})")
        return one_line(f"wrote {self.path}")


_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def check_output(path, option: str) -> Target:
    """The checked ``Target`` of ``path``; a UsageError naming ``option`` and ``path`` otherwise.
    Touches nothing but a probe file it creates and removes at once (and stale temporary files
    of killed runs)."""
    if path is None or not str(path).strip():
        what = "an empty path" if not path else "blank"
        raise UsageError(f"{option} ({path!r}) is {what}: name a file, e.g. report.json")
    path = os.fspath(path)
    if "\0" in path:
        raise UsageError(f"{option} ({path!r}) holds a NUL character")
    if path.endswith((os.sep, "/")) or os.path.basename(path) in (".", ".."):
        if os.path.isdir(path):
            raise UsageError(f"{option} ({path}) is a folder: name a file in it")
        raise UsageError(f"{option} ({path}) names a folder (it ends in {os.sep}), not a file")
    real = os.path.abspath(path)
    st = _lstat(path, option)
    linked = st is not None and stat.S_ISLNK(st.st_mode)
    if linked:
        real = os.path.realpath(path)  # the target, dangling or not
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None  # a dangling link: its target is created
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsageError(f"{option} ({path}) is a symlink loop") from None
            raise UsageError(f"{option} ({path}) is a symlink that cannot be followed: {exc.strerror}") from None
        if st is None:
            _check_folder(os.path.dirname(real) or ".", path, option, f" (the symlink's target {real})")
    mode = owner = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{option} ({path}) is a folder: name a file in it")
        for test, kind in _KINDS:
            if test(st.st_mode):
                raise UsageError(
                    f"{option} ({path}) is {kind}, not a regular file: reports replace a file whole, "
                    "so name a new file or an existing one"
                )
        if not os.access(real, os.W_OK):
            raise UsageError(f"{option} ({path}) is a read-only file")
        mode, owner = stat.S_IMODE(st.st_mode) & 0o777, (st.st_uid, st.st_gid)
    folder = os.path.dirname(real) or "."
    _probe(folder, path, option)
    remove_stale_temporaries(folder)
    return Target(path, option, real, mode, owner, linked)


def _lstat(path: str, option: str):
    """os.lstat(path), None where nothing is there; a UsageError where the path cannot be reached."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        _check_folder(os.path.dirname(os.path.abspath(path)) or ".", path, option)
        return None
    except NotADirectoryError:
        _check_folder(os.path.dirname(os.path.abspath(path)) or ".", path, option)
        raise UsageError(f"{option} ({path}) is in a folder that cannot be reached") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise UsageError(f"{option} ({path[:60]}...) is too long a name: {exc.strerror}") from None
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{option} ({path}) is in a symlink loop") from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"{option} ({path}) is in a folder this user cannot open") from None
        raise UsageError(f"{option} ({path}) cannot be written: {exc.strerror}") from None


def _check_folder(folder: str, path: str, option: str, what: str = "") -> None:
    """``folder`` exists and is a folder; else name its first part that is missing or a file."""
    if os.path.isdir(folder):
        return
    part = folder
    while part and not os.path.lexists(part):
        parent = os.path.dirname(part)
        if parent == part:
            break
        part = parent
    if os.path.lexists(part) and not os.path.isdir(part):
        raise UsageError(f"{option} ({path}){what} is under {part}, which is a file, not a folder")
    raise UsageError(f"{option} ({path}){what} is in a folder that does not exist: {folder}")


def _probe(folder: str, path: str, option: str) -> None:
    """Create and remove a file in ``folder``: the one sure test that the report can be written
    there (permissions, read-only mounts, root or not)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp")
    except OSError as exc:
        why = {errno.EROFS: "a read-only file system", errno.EACCES: "no permission", errno.EPERM: "no permission"}
        raise UsageError(
            f"{option} ({path}) is in a folder where no file can be created ({folder}: "
            f"{why.get(exc.errno, exc.strerror)})"
        ) from None
    os.close(fd)
    os.unlink(tmp)


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the temporary files in ``folder`` that runs killed mid-write left (their process
    is gone); those of a live process, or of another user's, stay.  Returns the names removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_NAME.match(name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or not a pid at all): not ours to judge
    return True


def replace_atomically(target: Target | str, option: str, suffix: str, write) -> Target:
    """``write(f)`` fills a binary file object whose content then replaces ``target`` whole
    (see the module's docstring); a UsageError naming the option where that fails.  ``target``
    is checked again first: the folder may have gone while the work ran."""
    del suffix  # every temporary file ends in .tmp: the next run can tell which to clean up
    target = check_output(target.path if isinstance(target, Target) else target, option)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if target.owner is not None and target.owner != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, *target.owner)
            except OSError:
                pass  # not allowed: the file becomes this user's, as any rewrite would
        os.chmod(tmp, target.mode if target.mode is not None else _umasked(0o666))
        os.replace(tmp, target.real)
        tmp = None
        _fsync_folder(target.folder)
    except OSError as exc:
        raise UsageError(f"{option} ({target.path}) could not be written: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target


def write_atomically(path, text: str, option: str = "--json") -> Target:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all; returns where it went."""
    data = text.encode("utf-8")
    return replace_atomically(path, option, ".tmp", lambda f: f.write(data))


def save_text(path: str, text: str, option: str) -> Target:
    """Write ``text`` to ``path`` whole, then say so ("wrote PATH") on stdout."""
    from ._common import RUN

    target = write_atomically(path, text, option)
    RUN.wrote(target)
    print(target.wrote())
    return target


def require_folder(path: str, option: str) -> str:
    """The folder ``path`` goes in, after the checks of ``check_output``."""
    return check_output(path, option).folder


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umasked(mode: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask
