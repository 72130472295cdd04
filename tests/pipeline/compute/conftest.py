"""Shared fixtures of the compute tests: the real catalogs packaged in ``pipeline/compute/catalogs``
(byte-identical copies of ``../shared/data/catalog``; source and license in their ``NOTICE``), so that a
clone with nothing beside it runs these tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.compute.catalog import PACKAGED_CATALOG_DIR, Offer, OfferBook, load_catalogs, real_catalog_paths


@pytest.fixture(scope="session")
def catalog_dir() -> Path:
    return PACKAGED_CATALOG_DIR


@pytest.fixture(scope="session")
def real_offers(catalog_dir: Path) -> list[Offer]:
    return load_catalogs(real_catalog_paths(catalog_dir))


@pytest.fixture
def book(real_offers: list[Offer]) -> OfferBook:
    return OfferBook(real_offers)
