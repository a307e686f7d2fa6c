"""Write a directory atomically: build it in a temp dir beside the target, then swap it in.

An interrupt at any moment leaves either the old directory or the complete new one:
- the new checkpoint is built in `.<name>.tmp-<pid>-*`; a failure, Ctrl-C or SIGTERM removes it;
- an existing target is exchanged with it in one atomic step (Linux renameat2 RENAME_EXCHANGE);
  where that is unavailable, two renames with a rollback on failure, and a SIGKILL between them
  is repaired by the next run (the old directory is renamed back);
- temp dirs left by a killed run (their pid is gone) are removed by the next run, with a warning.

Which directories are replaced: an empty one, or one qrt wrote (it holds MANIFEST, the list of
files qrt wrote). Any other existing directory is refused unless overwrite=True; then, as in a
qrt directory, only qrt's files (the manifest's, the ones written now, and weight files:
*.safetensors and their index) are replaced, and the user's other files are kept.
"""
from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("qrt")
MANIFEST = ".qrt-manifest.json"
_WEIGHTS = re.compile(r".*\.safetensors(\.index\.json)?$")


class Terminated(SystemExit):
    """SIGTERM arrived while a directory was being written (exit status 128 + 15)."""


def check_out_dir(out_dir: "str | os.PathLike", overwrite: bool = False) -> Path:
    """The absolute output path, if qrt may write there; else an OSError saying why. Call it
    before any long work, so a bad --out is refused at once."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} is a file; expected a directory (new, empty, or written by qrt)")
    if out.is_dir() and not overwrite and not _replaceable(out):
        raise FileExistsError(f"output directory {out} exists and will not be replaced (it is not an empty or model "
                              f"directory written by qrt: no {MANIFEST}); pass overwrite=True (--overwrite) to "
                              "replace qrt's files in it and keep the others")
    anchor = next(p for p in [out, *out.parents] if p.exists())
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory {out}: cannot write in {anchor}")
    return out


def _replaceable(path: Path) -> bool:
    return not any(path.iterdir()) or (path / MANIFEST).is_file()


@contextmanager
def atomic_dir(out_dir: "str | os.PathLike", overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp dir to fill; on success it becomes `out_dir` (see the module docstring)."""
    out = check_out_dir(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        with _sigterm_as_exit():
            yield tmp
            _write_manifest(tmp)
            _keep_user_files(out, tmp)
            _publishable(tmp)
            _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the temp dir, or after an exchange the old target


def clean_stale(out: Path) -> list[Path]:
    """Remove what a killed writer of `out` left beside it; put back an old `out` a kill
    caught between two renames. Directories of live processes are left alone."""
    fixed = []
    for p in sorted(out.parent.glob(f".{out.name}.*-*-*")):
        m = re.fullmatch(rf"\.{re.escape(out.name)}\.(tmp|old)-(\d+)-.+", p.name)
        if m is None or _alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not out.exists():
            os.rename(p, out)
            log.warning("%s: restored the previous checkpoint from %s (a save was killed mid-replace)", out, p.name)
        else:
            shutil.rmtree(p, ignore_errors=True)
            log.warning("%s: removed %s left by a killed save", out.parent, p.name)
        fixed.append(p)
    return fixed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextmanager
def _sigterm_as_exit():
    """SIGTERM raises Terminated (so `finally` blocks clean up) instead of killing at once.
    Signal handlers can only be set from the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(128 + signal.SIGTERM)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_manifest(tmp: Path) -> None:
    files = sorted(p.name for p in tmp.iterdir())
    (tmp / MANIFEST).write_text(json.dumps({"written_by": "qrt", "files": files}, indent=1) + "\n")


def _qrt_files(out: Path) -> set[str]:
    try:
        files = json.loads((out / MANIFEST).read_text()).get("files", [])
        return {f for f in files if isinstance(f, str)}
    except (OSError, ValueError, AttributeError):
        return set()


def _keep_user_files(out: Path, tmp: Path) -> None:
    """Hard-link (or copy) into `tmp` the entries of `out` that are not qrt's."""
    if not out.is_dir():
        return
    owned = _qrt_files(out) | {p.name for p in tmp.iterdir()} | {MANIFEST}
    for p in out.iterdir():
        if p.name in owned or _WEIGHTS.fullmatch(p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.copytree(p, tmp / p.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(p, tmp / p.name)


def _link_or_copy(src, dst) -> None:
    if Path(src).is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _publishable(tmp: Path) -> None:
    """mkdtemp (and some writers) create 0700/0600 entries; give them the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [tmp, *tmp.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def _swap_in(tmp: Path, out: Path) -> None:
    """Make `tmp` the directory at `out`; an existing `out` ends up at `tmp`'s path (or is removed)."""
    if not out.exists():
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:  # e.g. SIGTERM between the renames: put the old one back
        if old.exists() and not out.exists():
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel, or a file system without it
        return False
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")
