"""The `anpr` command: one entry point, one module per sub-command.

Each sub-command lives with the code it drives and parses its own arguments, so this
file stays a table. Modules are imported only when their command runs: `anpr --help`
must not pay for importing torch or Dagster.
"""

from __future__ import annotations

import importlib
import sys

from anpr_pipeline.settings import SettingsError
from anpr_pipeline.vision.labels import LabelsError
from anpr_pipeline.vision.types import WeightsError

# name -> ("module:function", one-line help). The function takes argv (after the name)
# and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("anpr_pipeline.demo:main", "generate synthetic videos and run the pipeline on them"),
    "db": ("anpr_pipeline.db_cli:main", "events database: init | upgrade | info"),
    "eval": ("anpr_pipeline.evaluation:main", "detection + reading accuracy on a labelled photo folder"),
    "eval-crops": ("anpr_pipeline.evaluation:main_crops", "reading accuracy on labelled plate crops"),
    "eval-boxes": ("anpr_pipeline.evaluation:main_boxes", "reading from tight and loose boxes (synthetic)"),
    "read": (
        "anpr_pipeline.read_cli:main",
        "read the plates in photos and videos (files or folders) like the pipeline",
    ),
    "train": (
        "anpr_pipeline.vision.train:main",
        "train the plate reader or detector (anpr train reader|detector)",
    ),
    "export-plate": (
        "anpr_pipeline.ops.gdpr:main_export",
        "GDPR: export a plate's events, Parquet rows and crops (zip)",
    ),
    "erase-plate": (
        "anpr_pipeline.ops.gdpr:main_erase",
        "GDPR: erase a plate from events DB, crops and Parquet",
    ),
    "metrics": ("anpr_pipeline.ops.metrics:main", "Prometheus exporter: `anpr metrics serve [--port]`"),
    "ops": (
        "anpr_pipeline.ops.jobs:main",
        "run an operations job now: retention_sweep, archive, backup, ...",
    ),
    "bench": (
        "anpr_pipeline.bench:main",
        "throughput: pipeline per stage vs decode-only; `bench db`: Postgres",
    ),
    "search": ("anpr_pipeline.analyst_cli:search", "find a plate's events (exact, --prefix, --fuzzy)"),
    "export": ("anpr_pipeline.analyst_cli:export", "export events in a time window as Parquet or CSV"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: anpr <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in sorted(COMMANDS.items())]
    lines += ["", "Run `anpr <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"anpr: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except SettingsError as exc:  # a bad ANPR_* value: the message names it; no traceback
        print(f"anpr {name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except (LabelsError, FileNotFoundError, WeightsError) as exc:  # a bad labels CSV, input or weights path
        print(f"anpr {name}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
