"""`qrt` command line. Each subcommand lives in its own module under qrt/commands/ and
registers itself through `register(subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import sys

# module names under qrt.commands, in the order shown by --help
COMMANDS: list[str] = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qrt", description="Quantized LLM inference runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"qrt.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
