"""Write a directory atomically: build it in a temp dir beside the target, then rename.

Readers see either the old directory or the complete new one, never a half-written one;
a failure (or Ctrl-C) leaves the target untouched and removes the temp dir.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _replaceable(path: Path) -> bool:
    """Only an empty dir or a model dir (has config.json) is ever replaced, so a mistyped
    --out never wipes an unrelated folder."""
    return path.is_dir() and (not any(path.iterdir()) or (path / "config.json").is_file())


def _publishable(tmp: Path) -> None:
    """mkdtemp (and some writers) create 0700/0600 entries; give them the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [tmp, *tmp.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_dir(out_dir: "str | os.PathLike", overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp dir to fill; on success it becomes `out_dir` (replacing an existing
    model dir when overwrite=True)."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not (overwrite and _replaceable(out)):
        why = "overwrite=False" if overwrite is False else "it is not an empty or model directory"
        raise FileExistsError(f"output directory {out} exists and will not be replaced ({why})")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        _publishable(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
