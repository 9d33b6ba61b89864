"""`anpr train reader|detector ...`: one command, one trainer module per model."""

from __future__ import annotations

import importlib
import sys

TRAINERS = {
    "reader": ("anpr_pipeline.vision.train_reader", "train the plate CRNN reader on labelled crops"),
    "detector": ("anpr_pipeline.vision.train_detector", "train the plate detector"),
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"} or args[0] not in TRAINERS:
        lines = ["usage: anpr train {reader,detector} [options]", ""]
        if args and args[0] not in {"-h", "--help"}:
            lines[:0] = [f"anpr train: unknown model {args[0]!r}"]
        lines += [f"  {name:9s} {help_}" for name, (_, help_) in TRAINERS.items()]
        print("\n".join(lines), file=sys.stdout if args[:1] in ([], ["-h"], ["--help"]) else sys.stderr)
        return 0 if args[:1] in ([], ["-h"], ["--help"]) else 2
    module = importlib.import_module(TRAINERS[args[0]][0])
    return int(module.main(args[1:]) or 0)
