"""`qrt` command line. Each subcommand lives in its own module under qrt/commands/ that
exposes `register(subparsers)` (and an optional `ORDER` number for --help ordering)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import qrt.commands


def _command_modules():
    mods = [importlib.import_module(f"qrt.commands.{m.name}")
            for m in pkgutil.iter_modules(qrt.commands.__path__) if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qrt", description="Quantized LLM inference runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in _command_modules():
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
