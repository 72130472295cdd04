"""Shared fixtures of the compute tests: the real catalogs in ``../shared/data/catalog``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.compute.catalog import Offer, OfferBook, load_catalogs, real_catalog_paths

REPO = Path(__file__).resolve().parents[3]
CATALOG_DIR = REPO.parent / "shared" / "data" / "catalog"


@pytest.fixture(scope="session")
def catalog_dir() -> Path:
    assert CATALOG_DIR.is_dir(), f"real catalogs expected in {CATALOG_DIR}"
    return CATALOG_DIR


@pytest.fixture(scope="session")
def real_offers(catalog_dir: Path) -> list[Offer]:
    return load_catalogs(real_catalog_paths(catalog_dir))


@pytest.fixture
def book(real_offers: list[Offer]) -> OfferBook:
    return OfferBook(real_offers)
