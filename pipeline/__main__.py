"""``python -m pipeline worker | bridge | backtest ... | schemas | dev-token``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import timedelta


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument(
        "command", choices=["worker", "bridge", "backtest", "schemas", "dev-token"], help="what to run"
    )
    if not args or args[0] in {"-h", "--help"}:
        parser.print_help()
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "worker":
        from pipeline.worker import run_worker

        run_worker()
        return 0
    if command == "bridge":
        from pipeline.bridge import Bridge
        from pipeline.config import get_settings

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(Bridge(get_settings()).run_forever())
        return 0
    if command == "backtest":
        from pipeline.scaling.backtest import main as backtest

        return backtest(rest)
    if command == "schemas":
        from pipeline.contract.schema_files import write_schemas

        for path in write_schemas():
            sys.stderr.write(f"wrote {path}\n")
        return 0
    if command == "dev-token":
        from pipeline.config import get_settings
        from web.auth import issue_dev_token

        settings = get_settings()
        if settings.jwt_secret is None:
            sys.stderr.write("JWT_SECRET is not set: development tokens are signed with it\n")
            return 2
        secret = settings.jwt_secret.get_secret_value()
        token = issue_dev_token(secret, "dev-admin", ["platform-admin"], None, timedelta(hours=24))
        sys.stdout.write(token + "\n")
        return 0
    parser.error(f"unknown command {command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
