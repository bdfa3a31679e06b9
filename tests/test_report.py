"""Reports: the results.json contract, tables, and the shared CLI flags."""

import argparse
import json
import re

import numpy as np
import pytest
from matplotlib.container import BarContainer

from jaxcl import cli, engine, report


def fake_results(diverged_at=(-1, -1, 5)):
    correct = np.array([[[9, 0], [4, 8]], [[10, 0], [5, 10]], [[0, 0], [0, 0]]])
    return engine.Results(
        correct=correct,
        count=np.full((3, 2), 10),
        init_correct=np.full((3, 2), 5),
        train_loss=np.ones((3, 2)),
        diverged_at=np.array(diverged_at),
        diagnostics={},
    )


def test_result_row_metrics_and_diverged_seeds():
    row = report.result_row("m", fake_results(), extra="x")
    acc = row["metrics"]["acc"]
    assert acc["per_seed"][:2] == pytest.approx([0.6, 0.75]) and acc["per_seed"][2] is None
    assert acc["n_excluded"] == 1 and acc["mean"] == pytest.approx(0.675)
    assert row["metrics"]["pooled_acc"]["per_seed"][:2] == pytest.approx([0.6, 0.75])
    assert row["diverged_seeds"] == {2: 5} and row["extra"] == "x"
    assert row["pooled_acc_after_task"][0] == pytest.approx([0.45, 0.6])


def test_write_results_contract_and_table(tmp_path):
    rows = [report.result_row("m", fake_results(diverged_at=(-1, -1, -1)))]
    path = report.write_results(tmp_path, experiment="e", config={"seeds": 3}, rows=rows)
    payload = json.loads(path.read_text())
    assert payload["experiment"] == "e" and payload["config"] == {"seeds": 3}
    assert set(payload["rows"][0]["metrics"]["acc"]) == {"mean", "ci95", "per_seed"}
    table = report.markdown_table(rows, metrics=["acc"], paper={"m": {"acc": 0.5}})
    assert table.splitlines()[0] == "| method | acc (%) | acc paper |"
    assert "| 50.0 |" in table
    with pytest.raises(ValueError, match="'method' and 'metrics'"):
        report.write_results(tmp_path, experiment="e", config={}, rows=[{"method": "m"}])


def test_flags_are_checked_while_parsing(tmp_path):
    parser = cli.experiment_parser("d", methods=["a", "b"])
    out = ["--out", str(tmp_path / "new" / "dir")]
    args = parser.parse_args(["--methods", "b,a", *out])
    assert cli.selected_methods(args, ["a", "b"]) == ["a", "b"]  # the table's order
    assert args.out.is_dir()  # --out is made (and written to) while parsing
    for argv, message in [
        (["--methods", "c"], "--methods must be comma-separated method names, got c; "),
        (["--methods", ","], "valid names: a, b"),
        (["--seeds", "0"], "--seeds must be a positive integer, got '0'"),
        (["--checkpoint-every", "-1"], "--checkpoint-every must be an integer >= 0, got '-1'"),
        (["--seed-chunk", "1.5"], "--seed-chunk must be an integer >= 0, got '1.5'"),
    ]:
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            parser.parse_args([*argv, *out])
    assert cli.chunk_size(argparse.Namespace(checkpoint_every=0), 100) == 10
    assert cli.chunk_size(argparse.Namespace(checkpoint_every=3), 100) == 3


def test_number_types():
    assert cli.finite_float("-2.5") == -2.5 and cli.non_negative_float("0") == 0.0
    assert cli.int_between(1, 3)("3") == 3
    assert (cli.count_or_all("0"), cli.count_or_all("7")) == (None, 7)
    for parse, text in [
        (cli.finite_float, "inf"),
        (cli.non_negative_float, "-1e-9"),
        (cli.int_between(1, 3), "4"),
        (cli.positive_int, "x"),
        (cli.count_or_all, "-1"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got '{text}'"):
            parse(text)


def test_results_json_records_the_library_version_and_extra_entries(tmp_path):
    report.write_results(tmp_path, experiment="e", config={}, rows=[], extra={"timing": 1})
    payload = report.read_results(tmp_path / "results.json")
    assert payload["jaxcl_version"] == cli.jaxcl.__version__ and payload["timing"] == 1
    assert report.read_results(tmp_path / "absent.json") is None


def test_per_seed_reads_rows_back_with_nan_for_null():
    row = report.result_row("m", fake_results())
    back = report.per_seed(json.loads(json.dumps(row)))
    np.testing.assert_allclose(back["acc"], [0.6, 0.75, np.nan], rtol=1e-6)


def stat_rows():
    """Two methods with metrics a and b (b of "m2" missing, its a without a CI)."""
    stat = lambda mean, ci: {"mean": mean, "ci95": ci, "per_seed": []}  # noqa: E731
    return [
        {"method": "m1", "metrics": {"a": stat(0.5, 0.1), "b": stat(0.7, 0.05)}},
        {"method": "m2", "metrics": {"a": stat(0.4, None)}},
    ]


def test_metric_bars_draw_a_bar_per_metric_and_method_in_each_panel(tmp_path, monkeypatch):
    figures = []
    save = report.save_figure
    monkeypatch.setattr(
        report, "save_figure", lambda fig, path: figures.append(fig) or save(fig, path)
    )
    path = report.plot_metric_bars(
        stat_rows(),
        tmp_path / "bars.png",
        panels={"one": ["a", "b"], "two": ["b", "a"]},
        labels=["first", "second"],
        ylabel="%",
    )
    assert path.stat().st_size > 0
    one, two = ([c for c in ax.containers if isinstance(c, BarContainer)] for ax in figures[0].axes)
    assert [bars.get_label() for bars in one] == ["first", "second"]  # a bar per metric
    a_bars = one[0]  # metric a, at the left of each method's group
    np.testing.assert_allclose([r.get_x() + r.get_width() / 2 for r in a_bars], [-0.2025, 0.7975])
    np.testing.assert_allclose([r.get_height() for r in a_bars], [50.0, 40.0])
    segments = a_bars.errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1][1] - s[0][1] for s in segments], [20.0, 0.0])  # no CI
    assert np.isnan(two[0][1].get_height())  # b of m2 is missing: no bar
    for panels, labels, message in [
        ({}, None, "panels must be non-empty lists of metrics"),
        ({"one": ["a"], "two": ["a", "b"]}, None, "one length in every panel"),
        ({"one": ["a", "b"]}, ["x"], r"labels must be 2 names \(one per metric of a panel\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            report.plot_metric_bars(
                stat_rows(), tmp_path / "x.png", panels=panels, labels=labels, ylabel="%"
            )


def test_accuracy_curves_of_any_row_entry_with_a_confidence_band(tmp_path):
    rows = [{"method": "m", "name": "curve m", "curve": [[0.5, 0.6, None], [0.7, 0.8, 0.9]]}]
    path = report.plot_accuracy_curves(
        rows, tmp_path / "c.png", title="t", key="curve", label="name", spread="ci95", ylim=None
    )
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="spread must be one of 'ci95', 'seeds', got 'band'"):
        report.plot_accuracy_curves(rows, tmp_path / "c.png", title="t", spread="band")


def test_heatmap_prints_finite_values_with_contrasting_text(tmp_path, monkeypatch):
    figures, save = [], report.save_figure
    monkeypatch.setattr(
        report, "save_figure", lambda fig, path: figures.append(fig) or save(fig, path)
    )
    grid = [[0.1, 0.9, np.nan], [0.5, 0.25, 0.123]]
    path = report.heatmap(
        grid,
        tmp_path / "h.png",
        row_labels=["a", "b"],
        column_labels=["80%", "90%", "95%"],
        title="T",
        xlabel="sparsity",
        colorbar_label="ACC",
    )
    assert path.read_bytes().startswith(b"\x89PNG")
    ax, colorbar = figures[0].axes
    texts = {(t.get_position(), t.get_text()): t.get_color() for t in ax.texts}
    # viridis: dark purple at the low end (white text), yellow at the high end (black text).
    assert texts == {
        ((0, 0), "10.0"): "w",
        ((1, 0), "90.0"): "k",
        ((0, 1), "50.0"): "k",
        ((1, 1), "25.0"): "w",
        ((2, 1), "12.3"): "w",
    }
    assert [t.get_text() for t in ax.get_xticklabels()] == ["80%", "90%", "95%"]
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {0}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert (ax.get_title(), ax.get_xlabel(), colorbar.get_ylabel()) == ("T", "sparsity", "ACC")
    assert ax.images[0].get_clim() == (0.1, 0.9)  # the finite range by default
    report.heatmap(
        [[np.nan, 2.0]],
        tmp_path / "g.png",
        row_labels=["r"],
        column_labels=["x", "adam_nobc"],
        title="",
        vmin=0,
        vmax=4,
        percent=False,
        digits=2,
    )
    ax = figures[1].axes[0]
    assert [t.get_text() for t in ax.texts] == ["2.00"] and ax.images[0].get_clim() == (0, 4)
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {30}  # long labels slant


def test_heatmap_refuses_grids_it_cannot_draw(tmp_path):
    labels = dict(row_labels=["a"], column_labels=["x", "y"], title="")
    with pytest.raises(ValueError, match=r"grid must be of rank 2, got \(2,\)"):
        report.heatmap([0.1, 0.2], tmp_path / "h.png", **labels)
    with pytest.raises(ValueError, match=r"column_labels must be 3 labels, one per grid column"):
        report.heatmap([[0.1, 0.2, 0.3]], tmp_path / "h.png", **labels)
    with pytest.raises(
        ValueError, match="grid must be finite somewhere when vmin or vmax is not given"
    ):
        report.heatmap([[np.nan, np.nan]], tmp_path / "h.png", **labels)
    assert not (tmp_path / "h.png").exists()
