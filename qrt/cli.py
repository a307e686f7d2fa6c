"""`qrt` command line. Each subcommand lives in its own module under qrt/commands/ that
exposes `register(subparsers)` (and an optional `ORDER` number for --help ordering).

`qrt` (the console script, `python -m qrt`) runs `entry`: a user error (bad input, a missing or
malformed file, a refused --out) prints one line, `qrt: error: ...`, and exits 1; a usage error
(bad or conflicting options) exits 2; Ctrl-C exits 130. Anything else is a bug: one line naming
it, exit 1. `--debug` (anywhere on the command line) shows the traceback instead. `main` is the
same command line for Python callers: errors stay exceptions.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

import qrt.commands

# bad input from the user: a value, a file that is missing/unreadable/in the way
USER_ERRORS = (ValueError, OSError)


def _command_modules():
    mods = [importlib.import_module(f"qrt.commands.{m.name}")
            for m in pkgutil.iter_modules(qrt.commands.__path__) if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qrt", description="Quantized LLM inference runtime")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in _command_modules():
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status, or its exception (argparse raises SystemExit)."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def entry(argv: list[str] | None = None) -> int:
    """The console script: `main` with errors turned into one line and an exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv)
    except SystemExit as e:  # argparse (usage: 2, --help: 0), a command's usage message, or SIGTERM
        if debug and not isinstance(e.code, (int, type(None))):
            traceback.print_exc()
        return _exit_status(e)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("qrt: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into exit statuses
        if debug:
            traceback.print_exc()
            return 1
        if isinstance(e, USER_ERRORS):
            print(f"qrt: error: {_one_line(e)}", file=sys.stderr)
        else:
            print(f"qrt: internal error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)",
                  file=sys.stderr)
        return 1


def _exit_status(e: SystemExit) -> int:
    if e.code is None or isinstance(e.code, int):
        return e.code or 0
    print(f"qrt: error: {e.code}", file=sys.stderr)  # a command's usage message: SystemExit("--x: ...")
    return 2


def _one_line(e: BaseException) -> str:
    text = str(e) if not isinstance(e, OSError) or not e.filename or str(e.filename) in str(e) \
        else f"{e.filename}: {e.strerror or e}"
    return " ".join(text.split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(entry())
