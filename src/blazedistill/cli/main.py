"""`blazedistill` console script: dispatches to one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand modules under blazedistill.cli; each defines register(subparsers) and sets `func`
COMMANDS = ("detect", "distill", "evaluate", "bench", "export")


def build_parser() -> argparse.ArgumentParser:
    from blazedistill import __version__

    parser = argparse.ArgumentParser(
        prog="blazedistill",
        description="MediaPipe BlazeFace teachers in PyTorch, and distillation into ResNet-style students.",
    )
    parser.add_argument("--version", action="version", version=f"blazedistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"blazedistill.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"blazedistill.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
