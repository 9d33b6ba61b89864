"""`anpr db init|upgrade|info`: create, bring up to date, and describe the events database.

The URL comes from ANPR_DATABASE_URL (or --url). `init` and `upgrade` are both idempotent:
`init` creates what is missing; `upgrade` does the same and also creates the monthly
partitions ahead (Postgres) and drains rows that landed in the DEFAULT partition.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="anpr db", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["init", "upgrade", "info"])
    parser.add_argument("--url", help="SQLAlchemy URL of the events database (default: ANPR_DATABASE_URL)")
    parser.add_argument(
        "--months-ahead", type=int, default=2, help="monthly partitions to create ahead (Postgres)"
    )
    parser.add_argument("--json", action="store_true", help="info: print JSON")
    args = parser.parse_args(argv)

    import sqlalchemy as sa

    from anpr_pipeline.resources.event_store import (
        EventStore,
        EventStoreError,
        _first_line,
        require_sqlite_file,
    )
    from anpr_pipeline.settings import SettingsError, load_settings

    try:
        url = args.url or load_settings().database_url
        if args.action == "info":
            require_sqlite_file(url, "`anpr db init`")
        store = EventStore(url)
        if args.action in {"init", "upgrade"}:
            store.init_schema()
            created = store.ensure_month_partitions(months_ahead=args.months_ahead)
            print(f"{args.action}: events schema v{store.schema_version()} ready on {store.describe()}")
            if created:
                print(f"created partitions: {', '.join(created)}")
            return 0
        info = _info(store)
    except (EventStoreError, SettingsError) as exc:
        print(f"anpr db {args.action}: {exc}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as exc:  # anything the store did not wrap: still one line
        print(f"anpr db {args.action}: {_first_line(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}")
    return 0


def _info(store) -> dict:  # store: EventStore
    version = store.schema_version()
    info = {
        "database": store.describe(),
        "dialect": store.dialect,
        "schema_version": version if version is not None else "not initialised (run `anpr db init`)",
    }
    if version is not None:
        info["events"] = store.count()
        info["indexes"] = store.index_names()
        if store.dialect == "postgresql":
            info["partitions"] = store.partitions()
    return info
