"""Offers: what can be bought, where, at what hourly price.

Sources:

* SkyPilot v8 price catalogs (CSV), e.g. the real Lambda, Nebius and Verda files in
  ``../shared/data/catalog/``; a user can add their own CSV in the same format. The loader is driven
  by the header, so each provider's column order works (Lambda/Nebius, Verda and AWS differ), and it
  copes with the quirks of the real files: CRLF line ends, empty accelerator fields for CPU machines,
  ``8.0``-style counts, ``GpuInfo`` as JSON (Verda) or as a Python literal with single quotes
  (Lambda/Nebius), Verda rows with an empty ``Price`` but a ``SpotPrice`` (spot only), optional
  ``AvailabilityZone`` (one row per zone in AWS files).
* Quotes of the derivatives engine (wholesale prices and availability), merged over the catalog by
  :meth:`OfferBook.merge`.
* The in-house Kubernetes cluster (:mod:`pipeline.compute.kubernetes_provider`).

One catalog row gives up to two offers: on-demand (``Price``) and spot (``SpotPrice``); each offer
has a single ``capacity_class`` and ``price_per_hour`` so that the optimizer ranks them uniformly.
Prices are USD per hour (the SkyPilot convention).
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.compute.request import normalize_name

logger = logging.getLogger(__name__)

CapacityClass = Literal["on_demand", "spot"]
OfferSource = Literal["catalog", "engine", "kubernetes"]

#: The real, complete catalogs in ``../shared/data/catalog`` (the AWS file there is a partial sample).
REAL_CATALOG_FILES = ("lambda_vms.v8.csv", "nebius_vms.v8.csv", "verda_vms.v8.csv")
#: Byte-identical copies of those three files, packaged with the service (source and license: ``NOTICE``).
PACKAGED_CATALOG_DIR = Path(__file__).with_name("catalogs")

_REQUIRED_COLUMNS = ("InstanceType", "vCPUs", "MemoryGiB", "Region")


class CatalogError(ValueError):
    """A catalog file that cannot be used at all (missing columns, unreadable)."""


class Offer(BaseModel):
    """One purchasable machine shape in one place, in one capacity class, at one hourly price.

    ``price_per_hour`` is the list (catalog) or wholesale (engine) price before tenant discounts.
    ``max_storage_gib`` ``None`` means any disk size can be attached. ``storage_price_per_gib_hour`` is
    what the provider charges per GiB of attached storage and hour, ``None`` where it does not price
    storage separately (SkyPilot catalogs carry no such column; a catalog may add
    ``StoragePricePerGiBHour``, the engine sends the field in its quotes). ``available``/``capacity`` are
    instance counts when known (engine quotes, Kubernetes configuration), ``None`` when unknown.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    offer_id: str
    provider: str
    region: str
    zone: str | None = None
    instance_type: str
    gpu_name: str | None = None
    gpu_count: int = Field(default=0, ge=0)
    gpu_memory_mib: int | None = None
    vcpus: float = Field(ge=0)
    memory_gib: float = Field(ge=0)
    max_storage_gib: float | None = None
    #: Bounded so that a hostile catalog or quote cannot make one GiB cost more than a machine could.
    storage_price_per_gib_hour: float | None = Field(default=None, ge=0, le=1.0)
    capacity_class: CapacityClass = "on_demand"
    price_per_hour: float = Field(ge=0)
    source: OfferSource = "catalog"
    available: int | None = None
    capacity: int | None = None

    @property
    def pool_key(self) -> tuple[str, str, str]:
        """Physical pool (provider, region/zone, instance type): spot and on-demand share it."""
        where = f"{self.region}/{self.zone}" if self.zone else self.region
        return (self.provider, where, self.instance_type)

    @property
    def resource_type(self) -> str:
        """``gpu:<name>`` for GPU machines, ``cpu`` otherwise (the capacity view's grouping)."""
        return f"gpu:{self.gpu_name}" if self.gpu_name and self.gpu_count > 0 else "cpu"


def make_offer_id(
    provider: str, region: str, instance_type: str, capacity_class: CapacityClass, zone: str | None = None
) -> str:
    """Stable id ``provider/region[/zone]/instance_type/capacity_class`` (also used by the engine)."""
    where = f"{region}/{zone}" if zone else region
    return f"{provider}/{where}/{instance_type}/{capacity_class}"


def provider_from_filename(path: Path) -> str:
    """``lambda_vms.v8.csv`` -> ``lambda``; ``my-cloud.csv`` -> ``my-cloud``."""
    stem = path.name.split(".", 1)[0]
    return normalize_name(stem.removesuffix("_vms"))


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    number = float(text)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"not a finite non-negative number: {text!r}")
    return number


def _gpu_memory_mib(raw: str | None) -> int | None:
    """Per-GPU memory from ``GpuInfo`` (JSON or Python literal). ``TotalGpuMemoryInMiB`` is ignored:
    Lambda reports the per-GPU value there even for 8-GPU machines."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    info: object
    try:
        info = json.loads(text)
    except ValueError:
        try:
            info = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            logger.debug("unparseable GpuInfo %.80s", text)
            return None
    if not isinstance(info, dict):
        return None
    gpus = info.get("Gpus")
    if not isinstance(gpus, list) or not gpus or not isinstance(gpus[0], dict):
        return None
    memory = gpus[0].get("MemoryInfo")
    size = memory.get("SizeInMiB") if isinstance(memory, dict) else None
    return int(size) if isinstance(size, int | float) and size > 0 else None


def _row_offers(row: Mapping[str, str | None], provider: str) -> list[Offer]:
    instance_type = (row.get("InstanceType") or "").strip()
    region = (row.get("Region") or "").strip()
    if not instance_type or not region:
        raise ValueError("empty InstanceType or Region")
    zone = (row.get("AvailabilityZone") or "").strip() or None
    vcpus = _float(row.get("vCPUs"))
    memory = _float(row.get("MemoryGiB"))
    if vcpus is None or memory is None:
        raise ValueError("empty vCPUs or MemoryGiB")
    gpu_name = (row.get("AcceleratorName") or "").strip() or None
    count = _float(row.get("AcceleratorCount")) or 0.0
    if count != int(count):
        raise ValueError(f"fractional accelerator count {count}")
    gpu_count = int(count) if gpu_name else 0
    if gpu_name and gpu_count == 0:
        raise ValueError("accelerator name without a count")
    gpu_memory = _gpu_memory_mib(row.get("GpuInfo")) if gpu_name else None
    storage_price = _float(row.get("StoragePricePerGiBHour"))
    offers = []
    for capacity_class, column in (("on_demand", "Price"), ("spot", "SpotPrice")):
        price = _float(row.get(column))
        if price is None:
            continue
        offers.append(
            Offer(
                offer_id=make_offer_id(provider, region, instance_type, capacity_class, zone),  # type: ignore[arg-type]
                provider=provider,
                region=region,
                zone=zone,
                instance_type=instance_type,
                gpu_name=gpu_name,
                gpu_count=gpu_count,
                gpu_memory_mib=gpu_memory,
                vcpus=vcpus,
                memory_gib=memory,
                capacity_class=capacity_class,  # type: ignore[arg-type]
                price_per_hour=price,
                storage_price_per_gib_hour=storage_price,
            )
        )
    if not offers:
        raise ValueError("neither Price nor SpotPrice")
    return offers


def parse_catalog(lines: Iterable[str], provider: str, *, name: str = "<catalog>") -> list[Offer]:
    """Offers of one SkyPilot-v8-format CSV (already split into lines, any line ends).

    Unusable rows are skipped and counted (one warning per file); duplicate offer ids keep the first.
    """
    provider = normalize_name(provider)
    if not provider or "/" in provider:
        raise CatalogError(f"{name}: invalid provider name {provider!r}")
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if missing or not ({"Price", "SpotPrice"} & set(header)):
        raise CatalogError(f"{name}: missing columns {missing or ['Price/SpotPrice']} (header {header})")
    reader.fieldnames = header
    offers: dict[str, Offer] = {}
    skipped: Counter[str] = Counter()
    for row in reader:
        try:
            row_offers = _row_offers(row, provider)
        except ValueError as exc:
            skipped[str(exc).split(":", 1)[0]] += 1
            continue
        for offer in row_offers:
            if offer.offer_id in offers:
                skipped["duplicate"] += 1
            else:
                offers[offer.offer_id] = offer
    if skipped:
        logger.warning("catalog %s: skipped %d row(s): %s", name, sum(skipped.values()), dict(skipped))
    logger.info("catalog %s: %d offers for provider %s", name, len(offers), provider)
    return list(offers.values())


def load_catalog(path: Path, provider: str | None = None) -> list[Offer]:
    """Offers of one CSV file; the provider defaults to the file name (``lambda_vms.v8.csv`` -> lambda)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return parse_catalog(handle, provider or provider_from_filename(path), name=path.name)
    except OSError as exc:
        raise CatalogError(f"{path}: {exc}") from exc


def load_catalogs(paths: Iterable[Path]) -> list[Offer]:
    """Offers of several files (e.g. the real ones plus a user's own)."""
    offers: list[Offer] = []
    for path in paths:
        offers.extend(load_catalog(path))
    return offers


def real_catalog_paths(catalog_dir: Path) -> list[Path]:
    """The complete real catalogs in ``catalog_dir`` (``../shared/data/catalog``)."""
    return [catalog_dir / name for name in REAL_CATALOG_FILES]


class OfferBook:
    """The current set of offers, by id; ``version`` changes on every update (for index caching)."""

    def __init__(self, offers: Iterable[Offer] = ()) -> None:
        self._offers: dict[str, Offer] = {}
        self.version = 0
        self.merge(offers)

    def merge(self, offers: Iterable[Offer]) -> None:
        """Add or replace offers by id (an engine quote replaces the catalog's list price)."""
        for offer in offers:
            self._offers[offer.offer_id] = offer
        self.version += 1

    def remove(self, offer_ids: Iterable[str]) -> None:
        for offer_id in offer_ids:
            self._offers.pop(offer_id, None)
        self.version += 1

    def get(self, offer_id: str) -> Offer | None:
        return self._offers.get(offer_id)

    def __len__(self) -> int:
        return len(self._offers)

    def __iter__(self) -> Iterator[Offer]:
        return iter(list(self._offers.values()))

    def offers(self) -> list[Offer]:
        return list(self._offers.values())


def discount_multiplier(discounts: Mapping[str, float], provider: str) -> float:
    """``1 - discount`` for ``provider`` (keys compared case-insensitively; missing = no discount)."""
    key = normalize_name(provider)
    fraction = next((f for name, f in discounts.items() if normalize_name(name) == key), 0.0)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"discount for {provider} must be in [0, 1): {fraction}")
    return 1.0 - fraction


def effective_price(offer: Offer, discounts: Mapping[str, float]) -> float:
    """Hourly price after the tenant's negotiated discount for the offer's provider."""
    return offer.price_per_hour * discount_multiplier(discounts, offer.provider)
