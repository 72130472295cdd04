from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from pipeline.compute.catalog import (
    CatalogError,
    Offer,
    OfferBook,
    effective_price,
    load_catalog,
    parse_catalog,
    provider_from_filename,
)


def test_real_catalogs_load_completely(real_offers: list[Offer]) -> None:
    by = Counter((o.provider, o.capacity_class) for o in real_offers)
    # 408 Lambda rows (no spot), 61 Nebius rows (8 with spot), 33 Verda rows (5 spot-only, 27 with spot)
    assert by == {
        ("lambda", "on_demand"): 408,
        ("nebius", "on_demand"): 61,
        ("nebius", "spot"): 8,
        ("verda", "on_demand"): 28,
        ("verda", "spot"): 27,
    }
    assert len({o.offer_id for o in real_offers}) == len(real_offers)


def test_quirks_of_the_real_files(real_offers: list[Offer]) -> None:
    by_id = {o.offer_id: o for o in real_offers}
    # Lambda: "8.0" counts, Python-literal GpuInfo whose total is the per-GPU value
    lam = by_id["lambda/us-east-1/gpu_8x_h100_sxm5/on_demand"]
    assert (lam.gpu_name, lam.gpu_count, lam.vcpus, lam.memory_gib) == ("H100", 8, 208.0, 1800.0)
    assert lam.price_per_hour == 31.92
    assert lam.gpu_memory_mib == 81920
    # Lambda CPU row: empty accelerator fields
    cpu = by_id["lambda/us-east-1/cpu_4x_general/on_demand"]
    assert (cpu.gpu_name, cpu.gpu_count) == (None, 0)
    # Verda: JSON GpuInfo; empty Price but a SpotPrice -> spot offer only
    assert "verda/FIN-03/2B300.60V/on_demand" not in by_id
    spot = by_id["verda/FIN-03/2B300.60V/spot"]
    assert (spot.gpu_name, spot.gpu_count, spot.price_per_hour, spot.gpu_memory_mib) == ("B300", 2, 4.893, 268800)
    # Nebius: "0" accelerator count for CPU machines, spot price where present
    assert by_id["nebius/eu-north1/gpu-h100-sxm_8gpu-128vcpu-1600gb/spot"].price_per_hour == 10.0
    assert by_id["nebius/eu-north1/cpu-d3_4vcpu-16gb/on_demand"].gpu_count == 0


def test_user_catalog_in_the_same_format(tmp_path: Path) -> None:
    path = tmp_path / "mycloud_vms.v8.csv"
    path.write_bytes(
        b"InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice\r\n"
        b"big,H100,8,96,1024,20.5,my-region,,9.5\r\n"
        b"small,,,4,16,0.1,my-region,,\r\n"
        b"broken,,,x,16,0.1,my-region,,\r\n"
        b"free,,,4,16,,my-region,,\r\n"
        b"frac,T4,0.5,4,16,0.1,my-region,,\r\n"
        b"big,H100,8,96,1024,20.5,my-region,,9.5\r\n"
    )
    offers = load_catalog(path)
    assert provider_from_filename(path) == "mycloud"
    assert sorted(o.offer_id for o in offers) == [
        "mycloud/my-region/big/on_demand",
        "mycloud/my-region/big/spot",
        "mycloud/my-region/small/on_demand",
    ]


def test_aws_style_zones_give_distinct_offers() -> None:
    text = (
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone,Arch\n"
        "g5.xlarge,A10G,1.0,4.0,16.0,,1.006,0.4,us-east-1,use1-az1,x86_64\n"
        "g5.xlarge,A10G,1.0,4.0,16.0,,1.006,0.5,us-east-1,use1-az2,x86_64\n"
    )
    offers = parse_catalog(io.StringIO(text), "aws")
    assert {o.offer_id for o in offers} == {
        "aws/us-east-1/use1-az1/g5.xlarge/on_demand",
        "aws/us-east-1/use1-az1/g5.xlarge/spot",
        "aws/us-east-1/use1-az2/g5.xlarge/on_demand",
        "aws/us-east-1/use1-az2/g5.xlarge/spot",
    }
    assert all(o.region == "us-east-1" for o in offers)


def test_missing_columns_are_an_error() -> None:
    with pytest.raises(CatalogError):
        parse_catalog(io.StringIO("InstanceType,Price\nx,1\n"), "p")
    with pytest.raises(CatalogError):
        load_catalog(Path("/nonexistent/x_vms.v8.csv"))


def test_discount_and_book_merge(real_offers: list[Offer]) -> None:
    offer = next(o for o in real_offers if o.provider == "lambda")
    assert effective_price(offer, {"Lambda": 0.25}) == pytest.approx(offer.price_per_hour * 0.75)
    assert effective_price(offer, {"nebius": 0.5}) == offer.price_per_hour
    with pytest.raises(ValueError):
        effective_price(offer, {"lambda": 1.0})
    book = OfferBook(real_offers)
    version = book.version
    quoted = offer.model_copy(update={"price_per_hour": 0.01, "source": "engine", "available": 2, "capacity": 3})
    book.merge([quoted])
    assert book.version != version
    assert book.get(offer.offer_id) == quoted
    assert len(book) == len(real_offers)
