"""Federated statistics: what sites compute and the server combines equals numpy on pooled data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.unit.workflows.test_workflow_arithmetic import SILENT, Sites, context

from shoal.fl.clients.stats import DataError, answer, read_table, resolve_data
from shoal.fl.model import FLModel
from shoal.workflows.base import RoundFailed
from shoal.workflows.fedstats import (
    ALL_STATISTICS,
    FedStats,
    combine_pass1,
    feature_report,
    histogram_edges,
    local_ssd,
    merge_histograms,
    site_pass1,
    site_pass2,
    std_from_ssd,
)

RNG = np.random.default_rng(7)
SITES = [
    RNG.normal(50, 12, (200, 3)),
    RNG.normal(55, 9, (150, 3)),
    RNG.uniform(0, 100, (37, 3)),
]
POOLED = np.concatenate(SITES)


def federated(sites: list[np.ndarray], bins: int = 10) -> dict[str, np.ndarray]:
    """The protocol end to end, without processes: pass 1, combine, pass 2, combine."""
    glob = combine_pass1(site_pass1(x) for x in sites)
    ranges = [[lo, hi] for lo, hi in zip(glob["min"], glob["max"], strict=True)]
    second = [site_pass2(x, list(glob["mean"]), ranges, bins) for x in sites]
    ssd = np.sum([p["ssd"] for p in second], axis=0)
    return {
        **glob,
        "std": std_from_ssd(ssd, glob["count"]),
        "std_sample": std_from_ssd(ssd, glob["count"], ddof=1),
        "hist": merge_histograms(p["hist"] for p in second),
    }


def test_combined_statistics_equal_numpy_on_pooled_rows() -> None:
    got = federated(SITES)
    np.testing.assert_array_equal(got["count"], [len(POOLED)] * 3)
    np.testing.assert_allclose(got["sum"], POOLED.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(got["mean"], POOLED.mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(got["min"], POOLED.min(axis=0))
    np.testing.assert_array_equal(got["max"], POOLED.max(axis=0))
    np.testing.assert_allclose(got["std"], POOLED.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(got["std_sample"], POOLED.std(axis=0, ddof=1), rtol=1e-12)


def test_histogram_is_the_pooled_histogram_over_the_global_range() -> None:
    got = federated(SITES, bins=7)
    assert got["hist"].shape == (3, 7)
    for j in range(3):
        counts, edges = np.histogram(POOLED[:, j], bins=7, range=(POOLED[:, j].min(), POOLED[:, j].max()))
        np.testing.assert_array_equal(got["hist"][j], counts)
        np.testing.assert_array_equal(histogram_edges(got["min"][j], got["max"][j], 7), edges)
        assert got["hist"][j].sum() == len(POOLED)  # the global max lands in the last, closed bin


def test_constant_feature_gets_numpy_edges_and_zero_std() -> None:
    sites = [np.full((12, 1), 3.0), np.full((20, 1), 3.0)]
    got = federated(sites, bins=4)
    np.testing.assert_array_equal(got["std"], [0.0])
    counts, edges = np.histogram(np.full(32, 3.0), bins=4, range=(3.0, 3.0))
    np.testing.assert_array_equal(got["hist"][0], counts)
    np.testing.assert_array_equal(histogram_edges(3.0, 3.0, 4), edges)


def test_std_from_ssd_is_nan_without_enough_rows() -> None:
    out = std_from_ssd([0.0, 8.0], [1.0, 3.0], ddof=1)
    assert np.isnan(out[0]) and out[1] == pytest.approx(2.0)


def test_site_std_from_its_ssd_about_the_global_mean() -> None:
    glob = combine_pass1(site_pass1(x) for x in SITES)
    for x in SITES:
        ssd_global = site_pass2(x, list(glob["mean"]), [[0, 1]] * 3, 0)["ssd"]
        own = local_ssd(ssd_global, [len(x)] * 3, x.mean(axis=0), glob["mean"])
        np.testing.assert_allclose(std_from_ssd(own, [len(x)] * 3), x.std(axis=0), rtol=1e-10)


def test_merge_refuses_histograms_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="different shapes"):
        merge_histograms([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError):
        combine_pass1([])


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_table_skips_empty_lines(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "a.csv", "age,bmi\n\n30,21.5\n  \n40,22\n\n")
    names, data = read_table(f)
    assert names == ["age", "bmi"]
    np.testing.assert_array_equal(data, [[30, 21.5], [40, 22]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age,bmi\n30,abc\n", r"line 2, column 'bmi': 'abc' is not a number"),
        ("age,bmi\n30,\n", r"line 2, column 'bmi': '' is not a number"),
        ("age,bmi\n30,nan\n", r"not a finite number"),
        ("age,bmi\n30\n", r"1 cells, the header names 2 columns"),
        ("", r"is empty"),
    ],
)
def test_non_numeric_csv_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    f = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message):
        read_table(f)
    with pytest.raises(DataError, match=message):
        answer(f, 1, {"pass": 1})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the data file"):
        read_table(tmp_path / "nope.csv")


def test_a_small_site_withholds_everything_even_its_row_count(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "s.csv", "age,bmi\n" + "".join(f"{i},{i / 2}\n" for i in range(5)))
    metas: list[dict[str, object]] = [
        {"pass": 1, "min_count": 10},
        {"pass": 2, "min_count": 10, "mean": [0, 0], "bins": 3},
    ]
    for meta in metas:
        out = answer(f, 10, meta)
        assert dict(out.params) == {}
        assert out.meta == {"withheld": True, "reason": "fewer than min_count rows"}
        assert out.metrics == {} and out.num_examples == 1
    # the larger of the site's own threshold and the server's applies
    assert answer(f, 1, {"pass": 1, "min_count": 6}).meta.get("withheld")
    assert answer(f, 6, {"pass": 1, "min_count": 1}).meta.get("withheld")
    assert not answer(f, 5, {"pass": 1, "min_count": 5}).meta.get("withheld")


def test_answer_both_passes(tmp_path: Path) -> None:
    x = SITES[0]
    f = write_csv(
        tmp_path / "s.csv", "a,b,c\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in x)
    )
    one = answer(f, 10, {"pass": 1, "min_count": 10})
    assert one.meta == {"pass": 1, "features": ["a", "b", "c"]} and one.num_examples == 200
    for k, v in site_pass1(x).items():
        np.testing.assert_array_equal(one.params[k], v)
    meta = {
        "pass": 2,
        "features": ["a", "b", "c"],
        "mean": [1.0, 2.0, 3.0],
        "ranges": [[0, 100]] * 3,
        "bins": 5,
    }
    two = answer(f, 10, meta)
    want = site_pass2(x, [1.0, 2.0, 3.0], [[0, 100]] * 3, 5)
    np.testing.assert_array_equal(two.params["ssd"], want["ssd"])
    np.testing.assert_array_equal(two.params["hist"], want["hist"])
    with pytest.raises(DataError, match="differ from the job's features"):
        answer(f, 10, {**meta, "features": ["a", "b"]})


def test_resolve_data_expands_site_and_prefers_the_apps_custom_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "job" / "app"
    (app / "custom" / "data").mkdir(parents=True)
    (app / "custom" / "data" / "site-9.csv").write_text("a\n1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOAL_APP_DIR", str(app))  # what site agents and the simulator set
    assert resolve_data("data/{site}.csv", "site-9") == (app / "custom" / "data" / "site-9.csv").resolve()
    assert resolve_data("other/{site}.csv", "site-9") == tmp_path / "other" / "site-9.csv"
    assert resolve_data("/abs/{site}.csv", "x") == Path("/abs/x.csv")


def test_all_statistics_are_known() -> None:
    assert ALL_STATISTICS == ("count", "sum", "mean", "std", "min", "max", "histogram")


def test_recipe_exports_the_builtin_client_and_workflow_args(tmp_path: Path) -> None:
    from shoal.errors import ShoalError
    from shoal.recipes import RECIPES, FedStatsRecipe

    (tmp_path / "src" / "data").mkdir(parents=True)
    (tmp_path / "src" / "data" / "site-1.csv").write_text("a\n1\n")
    recipe = FedStatsRecipe(
        name="st",
        min_clients=1,
        bins=4,
        statistics=["mean", "std"],
        custom_files=["data"],
        source_dir=tmp_path / "src",
    )
    job = recipe.export(tmp_path / "job")
    client = json.loads((job / "app" / "config" / "config_fed_client.json").read_text())
    assert client == {"module": "shoal.fl.clients.stats", "args": "--data data/{site}.csv --min-count 10"}
    server = json.loads((job / "app" / "config" / "config_fed_server.json").read_text())
    assert server == {
        "workflow": "fedstats",
        "args": {"statistics": ["mean", "std"], "min_count": 10, "bins": 4},
    }
    assert (job / "app" / "custom" / "data" / "site-1.csv").is_file()
    assert RECIPES["fedstats"] is FedStatsRecipe
    spaced = FedStatsRecipe(name="st", data="my data/{site}.csv", min_count=3)
    assert spaced.train_args == "--data 'my data/{site}.csv' --min-count 3"
    bads: list[dict[str, Any]] = [{"min_count": 0}, {"bins": 0}, {"statistics": ["median"]}]
    for bad in bads:
        with pytest.raises(ShoalError):
            FedStatsRecipe(name="st", **bad)


# --- edges that mutation testing found unchecked (docs/mutation.md) --------------------------


def test_integer_tables_give_float64_numbers() -> None:
    """Sites may read integer columns: every number the protocol passes is float64 all the same
    (an integer std_from_ssd divided in integers, and sums of large counts could overflow)."""
    table = np.array([[1, 10], [2, 20], [4, 40]], dtype=np.int64)
    first = site_pass1(table)
    assert all(v.dtype == np.float64 for v in first.values())
    glob = combine_pass1([{k: v.astype(np.int64) for k, v in first.items()}])
    assert all(v.dtype == np.float64 for v in glob.values())
    np.testing.assert_allclose(glob["mean"], [7 / 3, 70 / 3], rtol=1e-15)
    np.testing.assert_allclose(std_from_ssd(np.array([8]), np.array([3])), [np.sqrt(8 / 3)], rtol=1e-15)
    merged = merge_histograms([np.array([[1, 2]]), np.array([[3, 4]])])
    assert merged.dtype == np.float64 and merged.tolist() == [[4.0, 6.0]]


def test_std_of_a_single_row_or_two_with_ddof_1() -> None:
    np.testing.assert_allclose(std_from_ssd([4.0], [1.0]), [2.0])  # n - ddof == 1 divides by 1
    np.testing.assert_allclose(std_from_ssd([9.0], [2.0], ddof=1), [3.0])
    assert np.isnan(std_from_ssd([9.0], [0.0])[0])


def test_site_own_ssd_is_never_negative_and_not_clamped_above_zero() -> None:
    np.testing.assert_allclose(local_ssd([0.25], [1.0], [0.0], [0.0]), [0.25])
    np.testing.assert_allclose(local_ssd([1.0], [4.0], [1.0], [0.0]), [0.0])  # below 0 (rounding): 0


def test_pass_1_takes_one_row_and_refuses_what_is_not_a_table() -> None:
    np.testing.assert_array_equal(site_pass1([[1.0, 2.0]])["sum"], [1.0, 2.0])
    for bad in (np.zeros(3), np.zeros((0, 3)), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match="^pass 1 needs at least one row of a 2-D table$"):
            site_pass1(bad)
    with pytest.raises(ValueError, match="^no pass-1 parts to combine$"):
        combine_pass1([])
    with pytest.raises(ValueError, match="^no histograms to merge$"):
        merge_histograms([])


@pytest.mark.parametrize(
    ("data", "mean", "ranges"),
    [
        (np.zeros((4, 3)), [0.0, 0.0], [[0, 1], [0, 1]]),  # fewer means than features
        (np.zeros((4, 2)), [0.0, 0.0], [[0, 1]]),  # fewer ranges than means
        (np.zeros(3), [0.0, 0.0, 0.0], [[0, 1]] * 3),  # not a table
    ],
)
def test_pass_2_refuses_a_mean_or_ranges_of_another_width(
    data: np.ndarray, mean: list[float], ranges: list[list[float]]
) -> None:
    with pytest.raises(ValueError, match=f"pass 2 got {len(mean)} features for a table of shape"):
        site_pass2(data, mean, ranges, 3)


def test_pass_2_with_one_bin_counts_every_row() -> None:
    got = site_pass2(np.array([[0.0], [0.5], [1.0]]), [0.5], [[0.0, 1.0]], 1)
    np.testing.assert_array_equal(got["hist"], [[3.0]])
    assert "hist" not in site_pass2(np.array([[0.0]]), [0.0], [[0.0, 1.0]], 0)


# --- the workflow, in process, against numpy (docs/mutation.md) -------------------------------


def run_fedstats(
    tmp_path: Path, tables: dict[str, np.ndarray | None], **args: Any
) -> tuple[dict[str, Any], Sites]:
    """FedStats over sites that answer with the real site code (``answer``) from CSV files; a
    table of None is a site that fails its task. The report and the channel's record."""
    files = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for site, table in tables.items():
        if table is not None:
            rows = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in table)
            files[site] = write_csv(tmp_path / f"{site}.csv", "a,b,c\n" + rows)

    def train(site: str, model: dict[str, np.ndarray], task: dict[str, Any]) -> FLModel | None:
        return answer(files[site], 1, task["meta"]) if site in files else None

    channel = Sites(tmp_path, train)
    FedStats(context(tmp_path / "wf", channel, sorted(tables)), **args).run()
    return json.loads((tmp_path / "wf" / "workspace" / "statistics.json").read_text()), channel


def check_features(report: dict[str, Any], x: np.ndarray, edges: list[np.ndarray]) -> None:
    for j, name in enumerate(["a", "b", "c"]):
        got, col = report[name], x[:, j]
        assert got["count"] == len(col)
        assert got["sum"] == pytest.approx(col.sum(), rel=1e-12)
        assert got["mean"] == pytest.approx(col.mean(), rel=1e-12)
        assert got["std"] == pytest.approx(col.std(), rel=1e-9)
        assert got["std_sample"] == pytest.approx(col.std(ddof=1), rel=1e-9)
        assert (got["min"], got["max"]) == (col.min(), col.max())
        counts, _ = np.histogram(col, bins=edges[j])
        assert got["histogram"] == {"edges": edges[j].tolist(), "counts": counts.tolist()}


def test_the_workflow_reports_numpy_on_pooled_rows_and_each_site_alone(tmp_path: Path) -> None:
    tables = {
        "site-1": SITES[0],
        "site-2": SITES[1],
        "site-3": SITES[2],
        "a-small": SITES[0][:5],
        "gone": None,
    }
    report, channel = run_fedstats(tmp_path, tables, bins=6)
    edges = [np.histogram_bin_edges(POOLED[:, j], bins=6) for j in range(3)]
    assert report["features"] == ["a", "b", "c"] and report["statistics"] == list(ALL_STATISTICS)
    assert report["std_ddof"] == 0 and report["min_count"] == 10
    check_features(report["global"], POOLED, edges)
    for i, site in enumerate(["site-1", "site-2", "site-3"]):
        check_features(report["sites"][site], SITES[i], edges)  # over the global edges
    assert report["sites"]["a-small"] == {"withheld": True, "reason": "fewer than min_count rows"}
    assert report["sites"]["gone"] == {"answered": False}

    contributing = ["site-1", "site-2", "site-3"]
    first, second = channel.tasks
    assert (first["task_name"], first["round"], first["total_rounds"]) == ("stats", 0, 2)
    assert first["meta"] == {"pass": 1, "min_count": 10} and first["sites"] == sorted(tables)
    assert (second["task_name"], second["round"], second["total_rounds"]) == ("stats", 1, 2)
    assert second["sites"] == contributing and second["meta"]["bins"] == 6
    assert second["meta"]["features"] == ["a", "b", "c"] and second["meta"]["pass"] == 2
    assert second["meta"]["min_count"] == 10
    np.testing.assert_allclose(second["meta"]["mean"], POOLED.mean(axis=0), rtol=1e-12)
    assert second["meta"]["ranges"] == [[POOLED[:, j].min(), POOLED[:, j].max()] for j in range(3)]
    assert channel.rounds[0]["sites"] == sorted(["site-1", "site-2", "site-3", "a-small"])
    assert [r["round"] for r in channel.rounds] == [0, 1]
    assert channel.rounds[0]["metrics"] == {
        "contributing_sites": 3.0,
        "withheld_sites": 1.0,
        "rows": float(len(POOLED)),
    }
    assert channel.rounds[1]["sites"] == contributing
    assert channel.rounds[1]["metrics"] == {"contributing_sites": 3.0}
    summary = json.loads((tmp_path / "wf" / "workspace" / "metrics_summary.json").read_text())
    assert summary["workflow"] == "fedstats"


def test_without_std_or_histogram_there_is_one_pass_and_only_what_was_asked(tmp_path: Path) -> None:
    report, channel = run_fedstats(
        tmp_path, {"site-1": SITES[0], "site-2": SITES[1]}, statistics=["count", "mean"]
    )
    assert [(t["round"], t["total_rounds"]) for t in channel.tasks] == [(0, 1)]
    assert len(channel.rounds) == 1
    pooled = np.concatenate(SITES[:2])
    for j, name in enumerate(["a", "b", "c"]):
        assert report["global"][name] == {
            "count": len(pooled),
            "mean": pytest.approx(pooled[:, j].mean(), rel=1e-12),
        }
    assert report["sites"]["site-1"]["a"] == {
        "count": 200,
        "mean": pytest.approx(SITES[0][:, 0].mean(), rel=1e-12),
    }


def test_std_without_histogram_and_histogram_without_std(tmp_path: Path) -> None:
    report, channel = run_fedstats(tmp_path / "std", {"site-1": SITES[0]}, statistics=["std"])
    assert [(t["round"], t["total_rounds"]) for t in channel.tasks] == [(0, 2), (1, 2)]
    assert report["global"]["a"] == {
        "std": pytest.approx(SITES[0][:, 0].std(), rel=1e-9),
        "std_sample": pytest.approx(SITES[0][:, 0].std(ddof=1), rel=1e-9),
    }
    report, channel = run_fedstats(tmp_path / "hist", {"site-1": SITES[0]}, statistics=["histogram"], bins=2)
    assert channel.tasks[1]["meta"]["bins"] == 2 and channel.tasks[0]["total_rounds"] == 2
    counts, edges = np.histogram(SITES[0][:, 1], bins=2)
    assert report["global"]["b"] == {"histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}
    report, channel = run_fedstats(tmp_path / "nohist", {"site-1": SITES[0]}, statistics=["std", "min"])
    assert channel.tasks[1]["meta"]["bins"] == 0 and set(report["global"]["a"]) == {
        "std",
        "std_sample",
        "min",
    }


def test_the_workflow_fails_on_sites_it_cannot_combine(tmp_path: Path) -> None:
    with pytest.raises(RoundFailed, match="every site withheld its statistics") as err:
        run_fedstats(tmp_path / "withheld", {"site-1": SITES[0][:3], "site-2": SITES[1][:3]})
    assert "2 of 2 answering sites" in str(err.value) and "min_count=10" in str(err.value)

    (tmp_path / "cols").mkdir()
    other = write_csv(tmp_path / "cols" / "other.csv", "a,b,x\n" + "1,2,3\n" * 20)
    same = write_csv(tmp_path / "cols" / "same.csv", "a,b,c\n" + "1,2,3\n" * 20)

    def train(site: str, model: dict[str, np.ndarray], task: dict[str, Any]) -> FLModel:
        return answer(other if site == "site-2" else same, 1, task["meta"])

    with pytest.raises(RoundFailed, match="site site-2 has features") as err:
        FedStats(context(tmp_path / "cols" / "wf", Sites(tmp_path, train), ["site-1", "site-2"])).run()
    assert err.value.site == "site-2"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"statistics": ["count", "median"]}, r"unknown statistics \['median'\]; choose from count, sum"),
        ({"statistics": []}, "^statistics must name at least one statistic$"),
        ({"min_count": 0}, "^min_count must be an integer of at least 1$"),
        ({"min_count": True}, "min_count"),
        ({"min_count": 2.5}, "min_count"),
        ({"bins": 0}, "^bins must be an integer of at least 1$"),
        ({"bins": True}, "bins"),
        ({"bins": "3"}, "bins"),
    ],
)
def test_the_workflow_refuses_bad_arguments(tmp_path: Path, args: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FedStats(context(tmp_path, Sites(tmp_path, lambda *_: None), ["site-1"]), **args)


def test_arguments_are_kept(tmp_path: Path) -> None:
    flow = FedStats(
        context(tmp_path, Sites(tmp_path, lambda *_: None), ["site-1"]),
        min_count=3,
        bins=4,
        round_timeout=5,
        min_responses=2,
    )
    assert (flow.min_count, flow.bins, flow.round_timeout, flow.min_responses) == (3, 4, 5.0, 2)
    assert flow.statistics == list(ALL_STATISTICS)
    default = FedStats(context(tmp_path / "d", Sites(tmp_path, lambda *_: None), ["site-1"]))
    assert (default.min_count, default.bins, default.round_timeout, default.min_responses) == (10, 10, 0.0, 1)
    least = FedStats(
        context(tmp_path / "l", Sites(tmp_path, lambda *_: None), ["site-1"]), min_count=1, bins=1
    )
    assert (least.min_count, least.bins) == (1, 1)


def test_the_workflow_names_a_site_whose_numbers_it_cannot_use(tmp_path: Path) -> None:
    """Pass-1 numbers of the wrong length, a pass-2 histogram of the wrong shape, a site that
    withholds pass 2 after contributing to pass 1: each fails the job naming the site."""
    table = write_csv(tmp_path / "t.csv", "a,b\n" + "1,2\n3,5\n" * 10)
    cases = {
        "pass-1 numbers of the wrong shape": lambda m: (
            FLModel(
                params={k: np.zeros(3) for k in ("count", "sum", "min", "max")},
                meta={"pass": 1, "features": ["a", "b"]},
            )
            if m["pass"] == 1
            else None
        ),
        "a histogram of the wrong shape": lambda m: (
            answer(table, 1, m)
            if m["pass"] == 1
            else FLModel(params={"ssd": np.zeros(2), "hist": np.zeros((2, 3))}, meta={"pass": 2})
        ),
        "contributed to pass 1 but withheld pass 2": lambda m: (
            answer(table, 1, m) if m["pass"] == 1 else FLModel(meta={"withheld": True})
        ),
    }
    for i, (what, bad) in enumerate(cases.items()):

        def train(
            site: str, model: dict[str, np.ndarray], task: dict[str, Any], bad: Any = bad
        ) -> FLModel | None:
            return bad(task["meta"]) if site == "site-2" else answer(table, 1, task["meta"])

        flow = FedStats(context(tmp_path / str(i), Sites(tmp_path, train), ["site-1", "site-2"]), bins=4)
        with pytest.raises(RoundFailed, match=f"^site site-2 (sent )?{what}$") as err:
            flow.run()
        assert err.value.site == "site-2"


@pytest.mark.parametrize("silent_in_pass", [1, 2])
def test_the_workflow_keeps_its_deadline_in_both_passes(tmp_path: Path, silent_in_pass: int) -> None:
    table = write_csv(tmp_path / "t.csv", "a\n" + "1\n2\n" * 10)

    def train(site: str, model: dict[str, np.ndarray], task: dict[str, Any]) -> FLModel | str:
        return (
            SILENT
            if site == "site-2" and task["meta"]["pass"] == silent_in_pass
            else answer(table, 1, task["meta"])
        )

    flow = FedStats(
        context(tmp_path / "wf", Sites(tmp_path, train), ["site-1", "site-2"]),
        min_responses=2,
        round_timeout=0.3,
    )
    with pytest.raises(RoundFailed, match="round deadline passed") as err:
        flow.run()
    assert err.value.site == "site-2"


def test_one_feature_tables_count_their_rows(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "t.csv", "only\n" + "1\n2\n4\n" * 5)
    channel = Sites(tmp_path, lambda site, model, task: answer(table, 1, task["meta"]))
    FedStats(context(tmp_path / "wf", channel, ["site-1"]), statistics=["count"]).run()
    assert channel.rounds[0]["metrics"]["rows"] == 15.0


def test_a_feature_report_holds_only_what_was_asked_and_strict_json() -> None:
    edges, counts = np.array([0.0, 1.0]), np.array([3])
    assert feature_report(["count"], count=3, total=1.0, lo=0, hi=1, edges=edges, counts=counts) == {
        "count": 3
    }
    report = feature_report(["sum", "std"], count=1, total=float("inf"), lo=0, hi=1, std=1.0, std_sample=None)
    assert report == {"sum": None, "std": 1.0, "std_sample": None}  # no NaN or inf in JSON: null
