"""Where a worker's CPU goes, from a py-spy sample of it: the share of each task on its event loop and of each
of the project's functions (inclusive), as two tables.

Record the worker while a benchmark drives it (py-spy is a tool, not a dependency of the project; a throwaway
venv is enough), then read the samples::

    python3 -m venv .profile-tools && .profile-tools/bin/pip install py-spy==0.4.3
    .venv/bin/python -m bench.stream_latency --rate 20 --metrics-rate 980 --seconds 60 &
    .profile-tools/bin/py-spy record --pid "$(pgrep -f 'pipeline worker')" --duration 40 --rate 200 \\
        --format raw --nonblocking -o worker.raw
    .venv/bin/python -m bench.profile_breakdown worker.raw [--top 25] [--json]

A sample is one stack of one thread (py-spy counts only threads that are running or waiting for the GIL, not
idle ones), so the shares say where the worker's busy time went; the event loop's share of all samples says
how close its one thread is to saturation.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

#: The frame that runs the worker's event loop: what sits right below it is the task that was running.
LOOP_FRAME = "Worker.execute_from_commandline"
OURS = re.compile(r"\((pipeline|agents|tables|web)/")
#: The worker's entry frames, under every sample of the loop's thread: left out of the function table.
ENTRY = ("<module> (pipeline/__main__.py)", "main (pipeline/cli.py)", "worker (pipeline/cli.py)",
         "run_worker (pipeline/worker.py)")
_LINE = re.compile(r":\d+\)")


def frame_name(frame: str) -> str:
    """``function (path/file.py:12)`` -> ``function (path/file.py)``: lines of one function count together."""
    return _LINE.sub(")", frame)


def parse(lines: list[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def breakdown(stacks: list[tuple[list[str], int]], top: int) -> dict[str, Any]:
    total = sum(count for _, count in stacks)
    loop_total = 0
    tasks: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for frames, count in stacks:
        for i, frame in enumerate(frames):
            if frame.startswith(LOOP_FRAME):
                loop_total += count
                below = frames[i + 1:]
                # A task is named by its first project frame (which agent, which bridge loop), else its first.
                task = next((f for f in below if OURS.search(f)), below[0] if below else "(the loop itself)")
                tasks[frame_name(task)] += count
                break
        for name in {frame_name(f) for f in frames if OURS.search(f)} - set(ENTRY):
            ours[name] += count

    def share(counter: Counter[str], whole: int) -> list[dict[str, Any]]:
        return [{"name": name, "samples": n, "share": round(n / whole, 4)} for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "event_loop_samples": loop_total,
        "event_loop_share": round(loop_total / total, 4) if total else 0.0,
        "event_loop_tasks": share(tasks, loop_total or 1),
        "project_functions_inclusive": share(ours, total or 1),
    }


def table(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [title, "share  samples  name"]
    lines += [f"{row['share']:6.1%} {row['samples']:7d}  {row['name']}" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    result = breakdown(parse(args.raw.read_text().splitlines()), args.top)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['samples']} samples, {result['event_loop_share']:.1%} of them on the event loop's thread\n")
    print(table("event loop: the task that was running", result["event_loop_tasks"]))
    print()
    print(table("project functions (inclusive, of all samples)", result["project_functions_inclusive"]))


if __name__ == "__main__":
    main()
