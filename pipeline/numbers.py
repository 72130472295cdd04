"""Numbers the service accepts from outside: always finite and within stated ranges.

``1e999`` parses to infinity and pydantic accepts ``NaN``/``Infinity`` literals; stored, they serialize as
``null`` and every later read of the record fails. Every number at a boundary uses one of these types (or
an explicit ``Field`` with both bounds), so none can get in, and sums over many of them stay finite.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

#: Largest quantity (cores, GiB, GPUs, requests per second, prices per hour) accepted anywhere.
MAX_QUANTITY = 1e9
#: Largest magnitude of a signed measurement (an anomaly's value).
MAX_MAGNITUDE = 1e15
#: Largest count (replicas, observations) accepted anywhere.
MAX_COUNT = 1_000_000

#: A non-negative amount of something.
Quantity = Annotated[float, Field(ge=0, le=MAX_QUANTITY, allow_inf_nan=False)]
#: A finite measurement that may be negative.
FiniteFloat = Annotated[float, Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE, allow_inf_nan=False)]
#: A non-negative whole number of things.
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
