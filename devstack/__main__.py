"""``python -m devstack up [--core-first]|down|status|env [SERVICE...]`` and ``python -m devstack doctor``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence

from devstack import doctor, progress, stack
from devstack.base import StackContext
from devstack.errors import DevstackError
from pipeline.config import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status", "env", "doctor"])
    parser.add_argument("services", nargs="*", help=f"any of: {', '.join(stack.SERVICES)} (default: all)")
    parser.add_argument(
        "--core-first",
        action="store_true",
        help=f"up: start what the worker needs ({', '.join(stack.CORE)}) and return; the rest comes up in a "
        f"background process whose progress goes to DEVSTACK_HOME/{stack.BACKGROUND_LOG}",
    )
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx = stack.context(get_settings())
    try:
        if args.action == "doctor":
            findings = doctor.examine(ctx)
            sys.stdout.write(doctor.report(findings) + "\n")
            return 0 if all(f.ok for f in findings) else 1
        if args.action == "up" and args.core_first:
            core_first(ctx, args.services)
        elif args.action == "up":
            names = stack.with_dependencies(args.services or stack.SERVICES)
            up_shown(ctx, names)
            sys.stdout.write(stack.status_json(ctx, names))
            sys.stdout.write("\n")
        elif args.action == "down":
            stopped = stack.down(ctx, args.services)
            sys.stderr.write(f"stopped: {', '.join(stopped) or 'nothing was running'}\n")
        elif args.action == "status":
            sys.stdout.write(stack.status_json(ctx, args.services) + "\n")
            background = stack.background_pid(ctx)
            if background is not None:
                sys.stderr.write(
                    f"a background `up` is still running (pid {background}); its progress: "
                    f"{ctx.home / stack.BACKGROUND_LOG}\n"
                )
        else:
            for key, value in stack.exports(ctx, args.services).items():
                sys.stdout.write(f"export {key}={shlex.quote(value)}\n")
    except DevstackError as exc:
        sys.stderr.write(f"devstack: {exc}\n")
        return 1
    return 0


def up_shown(ctx: StackContext, names: Sequence[str]) -> None:
    """``stack.up`` of ``names`` with one progress display for all of them (live on a terminal)."""
    with progress.display(names) as shown:
        stack.up(ctx, names, reporter=shown)


def core_first(ctx: StackContext, names: Sequence[str]) -> None:
    """Bring up what the worker needs here, and the rest in a background process that outlives this one."""
    core, rest = stack.split_core(names or list(stack.SERVICES))
    if core:
        up_shown(ctx, core)
    if not rest:
        return
    background = stack.up_in_background(ctx, rest)
    verb = "is already bringing up" if background.already_running else "brings up"
    sys.stderr.write(
        f"devstack: a background process (pid {background.pid}) {verb} {', '.join(rest)}; "
        f"progress: {background.log}; `python -m devstack status` shows every service\n"
    )


if __name__ == "__main__":
    sys.exit(main())
