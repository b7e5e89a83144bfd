"""The ingest benchmark's engines compute winnow's table on a small SYNTHETIC trip file."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "explain"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("polars", reason="the polars arm needs the bench extra")
    return load("bench_demand_ingest")


def test_every_engine_gives_winnows_table(bench, tmp_path):
    path = load("make_trips").write_trips(tmp_path / "trips.csv", 20_000, seed=3)
    tables = {arm: bench.ARM_FUNCTIONS[arm](path)[0] for arm in (bench.PROJECT, *bench.PEERS)}
    ours = tables[bench.PROJECT]
    assert len(ours) > 500 and ours["trips"].sum() > 15_000
    for arm in bench.PEERS:
        checked = bench.agreement(ours, tables[arm], arm)  # raises on any difference
        assert checked["tracts"] == len(ours)
        assert max(checked["max_rel_diff"].values()) < 1e-9
