"""``python -m devstack up|down|status|env [SERVICE...]`` and ``python -m devstack doctor``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from devstack import doctor, stack
from devstack.errors import DevstackError
from pipeline.config import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status", "env", "doctor"])
    parser.add_argument("services", nargs="*", help=f"any of: {', '.join(stack.SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx = stack.context(get_settings())
    try:
        if args.action == "doctor":
            findings = doctor.examine(ctx)
            sys.stdout.write(doctor.report(findings) + "\n")
            return 0 if all(f.ok for f in findings) else 1
        if args.action == "up":
            stack.up(ctx, args.services)
            sys.stdout.write(stack.status_json(ctx, stack.with_dependencies(args.services or stack.SERVICES)))
            sys.stdout.write("\n")
        elif args.action == "down":
            stopped = stack.down(ctx, args.services)
            sys.stderr.write(f"stopped: {', '.join(stopped) or 'nothing was running'}\n")
        elif args.action == "status":
            sys.stdout.write(stack.status_json(ctx, args.services) + "\n")
        else:
            for key, value in stack.exports(ctx, args.services).items():
                sys.stdout.write(f"export {key}={shlex.quote(value)}\n")
    except DevstackError as exc:
        sys.stderr.write(f"devstack: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
