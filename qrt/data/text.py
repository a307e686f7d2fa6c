"""Where evaluation and calibration text comes from.

The package ships gzipped, byte-identical copies of WikiText-2 (qrt/data/README.md):
the raw test split for perplexity and the validation split for calibration. Resolution
order: an explicit path, then `$QRT_DATA_DIR/<plain name>`, then the packaged copy.
Paths ending in `.gz` are read through gzip, so a user can point at either form.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

PACKAGED_DIR = Path(__file__).resolve().parent
# plain file name (as distributed by the WikiText authors) -> packaged gzip copy
EVAL_TEXT = ("wiki.test.raw", "wikitext2-test.raw.gz")
CALIB_TEXT = ("valid.tokens.txt", "wikitext2-valid.tokens.txt.gz")


def resolve_text_path(path: "str | os.PathLike | None", default: tuple[str, str]) -> Path:
    """An existing file: `path` if given, else the default from $QRT_DATA_DIR or the package."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"text file not found: expected a readable file at {str(p)!r}")
        return p
    plain, packaged = default
    tried = []
    env_dir = os.environ.get("QRT_DATA_DIR")
    if env_dir:
        tried.append(Path(env_dir) / plain)
    tried.append(PACKAGED_DIR / packaged)
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(f"default text {plain!r} not found (looked in {[str(p) for p in tried]}); "
                            "pass a file path explicitly")


def read_text(path: "str | os.PathLike") -> str:
    """The file's text (utf-8), decompressing `.gz` files; newlines kept as in the file."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8", newline="") as f:
        return f.read()


def wikitext_rows(text: str) -> list[str]:
    """Rows the way the Hugging Face `wikitext` dataset builds them (what the GPTQ paper
    joins): one row per line with its newline kept, and a blank line (only whitespace)
    as an empty row."""
    parts = text.split("\n")  # only "\n" ends a line, as in Python's text-mode file iteration
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [line if line.strip() else "" for line in lines]


def gptq_eval_text(text: str) -> str:
    """The GPTQ paper's evaluation string: "\\n\\n".join(rows)."""
    return "\n\n".join(wikitext_rows(text))
