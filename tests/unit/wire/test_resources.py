"""Declared site resources and job resource specs: what is accepted, and what is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.errors import ShoalError
from shoal.scheduler.resources import ResourceBook
from shoal.site.policy import load_site_resources
from shoal.wire.resources import Need, ResourceError, check_declaration, check_spec, never_fits


def test_a_declaration_is_checked_and_normalised() -> None:
    assert check_declaration({}) == {}
    assert check_declaration({"gpus": [0, "GPU-3a"], "cpus": 8, "memory_gib": 31.5, "max_jobs": 2}) == {
        "gpus": ["0", "GPU-3a"],
        "cpus": 8,
        "memory_gib": 31.5,
        "max_jobs": 2,
    }


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ([0, 1], "resources"),
        ({"gpu": [0]}, "gpu"),
        ({"gpus": "0,1"}, "gpus"),
        ({"gpus": [0, 0]}, "gpus"),
        ({"gpus": [True]}, "gpus"),
        ({"gpus": ["../x"]}, "gpus"),
        ({"cpus": 0}, "cpus"),
        ({"cpus": "8"}, "cpus"),
        ({"max_jobs": 1.5}, "max_jobs"),
        ({"memory_gib": float("nan")}, "memory_gib"),
        ({"memory_gib": -1}, "memory_gib"),
    ],
)
def test_a_declaration_that_cannot_be_used_is_refused_naming_the_key(data: object, key: str) -> None:
    with pytest.raises(ResourceError) as err:
        check_declaration(data)
    assert err.value.key == key


def test_specs_in_flares_form() -> None:
    needs = check_spec({"site-1": {"num_gpus": 1, "mem_per_gpu_in_GiB": 8}, "site-2": {"num_cpus": 4}})
    assert (needs["site-1"].gpus, needs["site-2"].cpus) == (1, 4)
    for bad, key in (
        ({"site-1": 1}, "resource_spec.site-1"),
        ({"site-1": {"gpus": 1}}, "resource_spec.site-1.gpus"),
        ({"site-1": {"num_gpus": -1}}, "resource_spec.site-1.num_gpus"),
        ([], "resource_spec"),
    ):
        with pytest.raises(ResourceError) as err:
            check_spec(bad)
        assert err.value.key == key


def test_never_fits_compares_with_what_the_site_has_at_all() -> None:
    assert never_fits({"gpus": ["0"]}, Need(gpus=1)) is None
    assert "has 1 GPU" in str(never_fits({"gpus": ["0"]}, Need(gpus=2)))
    assert "CPUs" in str(never_fits({"cpus": 2}, Need(cpus=3)))
    assert never_fits({}, Need(cpus=64, memory_gib=512)) is None  # undeclared: no limit


def test_the_book_holds_the_lowest_free_gpus_and_gives_them_back() -> None:
    book, declared = ResourceBook(), {"gpus": ["0", "1", "2"], "max_jobs": 2}
    assert book.take(1, "s", declared, Need(gpus=2)) == ["0", "1"]
    assert "1 of 3 GPUs free (held by jobs 1)" in str(book.shortfall("s", declared, Need(gpus=2)))
    assert book.shortfall("s", declared, Need(gpus=1)) is None
    assert book.take(2, "s", declared, Need(gpus=1)) == ["2"]
    assert "at most 2" in str(book.shortfall("s", declared, Need()))  # max_jobs
    book.release(1)
    assert book.take(3, "s", declared, Need(gpus=2)) == ["0", "1"]


def test_a_sites_resources_file_that_cannot_be_used_stops_the_site(tmp_path: Path) -> None:
    assert load_site_resources(tmp_path) == {}
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "resources.json").write_text(json.dumps({"gpus": [0], "cpus": "lots"}))
    with pytest.raises(ShoalError) as err:
        load_site_resources(tmp_path)
    assert err.value.code == "LOCAL_FILE_ERROR" and err.value.context["key"] == "cpus"
    assert "resources.json" in err.value.message
