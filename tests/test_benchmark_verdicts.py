"""The numbers and verdicts the benchmark scripts put in front of a reader, against hand
computations on synthetic result files: matrix_summary's per-cell statistics and targets,
robustness_matrix's checks and --dense-from pairing, matrix_axes' CVs and verdicts, the L0
table's mean gaps. Each test was written against a mutant that the rendering test (which
re-renders numbers already stored) let through."""

import json
import math

import pytest

from tests.test_benchmarks import _cell, _matrix_file, _script


def _axes_row(mean, low, high, gap=None, se=0.1, seeds=2):
    row = {"seeds": list(range(seeds)), "widths_mean": mean, "widths_min": low,
           "widths_max": high}  # fmt: skip
    if gap is not None:
        row.update(gap_mean=gap, gap_se=se)
    return row


def _pop_cv(values):
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values)) / m


def _l0_row(seed, error, dense, widths=(50, 40), kept=0.2):
    return {"case": "mlp-n10k", "lambda": 0.1, "gate_lr": 0.1, "seed": seed, "gate_reach": 3.0,
            "widths": list(widths), "weights_kept_fraction": kept, "test_error": error,
            "dense_error": dense, "status": "finished"}  # fmt: skip


def test_matrix_summary_cell_statistics_match_a_hand_computation(tmp_path):
    script = _script("matrix_summary")
    first = str(_matrix_file(tmp_path / "a.json", [
        _cell("mlp-n10k", 0, 0.150, [60, 90], dense=0.145, kept=0.20),
        _cell("mlp-n10k", 1, 0.160, [66, 96], dense=0.150, kept=0.30),
        _cell("mlp-n10k", 2, 0.140, [75, 81], dense=0.141, kept=0.25, status="failed"),
        _cell("lenet5-n60k", 0, 0.100, [20, 30, 100], dense=0.098),
        _cell("lenet5-n10k", 0, 0.120, [20, 40, 60], dense=0.120),  # level with dense
        _cell("lenet5-n10k", 1, 0.110, [20, 40, 60], dense=0.110),
    ]))  # fmt: skip
    late = _cell("mlp-n10k", 3, 0.155, [71, 90], kept=0.22)
    more = str(_matrix_file(tmp_path / "b.json", [late]))
    result = script.main(["--from", first, more, "--name", "s", "--results-dir", str(tmp_path)])
    row = result["matrix_summary"]["mlp-n10k"]
    # by hand: gaps in points 0.5, 1.0, -0.1 (seed 3 has no dense run)
    gaps = [0.5, 1.0, -0.1]
    mean = sum(gaps) / 3
    se = math.sqrt(sum((g - mean) ** 2 for g in gaps) / 2) / math.sqrt(3)
    assert row["seeds"] == [0, 1, 2, 3]
    assert row["gap_seeds"] == [0, 1, 2]
    assert row["gaps"] == pytest.approx(gaps)
    assert row["gap_mean"] == pytest.approx(mean) and row["gap_se"] == pytest.approx(se)
    assert row["gap_target"] == 0.5 and row["gap_met"] is True  # 0.467 ≤ 0.5
    assert row["widths_mean"] == pytest.approx([(60 + 66 + 75 + 71) / 4, (90 + 96 + 81 + 90) / 4])
    assert row["widths_min"] == [60, 81] and row["widths_max"] == [75, 96]
    assert row["weights_kept_range"] == pytest.approx([0.20, 0.30])
    assert row["not_finished"] == [2]
    lenet5 = result["matrix_summary"]["lenet5-n60k"]  # issue 9 sets LeNet-5 cells 0.5 too
    assert lenet5["gap_target"] == 0.5 and lenet5["gap_met"] is True
    common = _script("common")
    stored = json.loads((tmp_path / "s.json").read_text())
    table = "\n".join(common.render_matrix_summary("s", stored))
    assert (f"| mlp-n10k | 4 (0-3) | +{mean:.2f} ± {se:.2f} (3) | 0.5 (met) | "
            "68.0 (60-75)-89.2 (81-96) | 20.0-30.0 | 2 |") in table  # fmt: skip
    assert "| lenet5-n60k | 1 (0-0) | +0.20 (1) | 0.5 (met) |" in table
    level = result["matrix_summary"]["lenet5-n10k"]  # a gap of 0 is a gap, met, se 0
    assert level["gap_mean"] == 0.0 and level["gap_se"] == 0.0 and level["gap_met"] is True
    assert "| lenet5-n10k | 2 (0-1) | +0.00 ± 0.00 (2) | 0.5 (met) |" in table


def test_matrix_summary_checks_count_runs_without_a_dense_run_for_the_widths(tmp_path):
    script = _script("matrix_summary")
    runs = str(_matrix_file(tmp_path / "a.json", [
        _cell("mlp-b32", 0, 0.12, [95, 80], dense=0.12),
        _cell("mlp-n60k", 0, 0.12, [100, 90], dense=0.12),
        _cell("mlp-n60k", 1, 0.12, [110, 100], dense=0.12),
        _cell("mlp-b256", 0, 0.12, [120, 100]),  # --no-dense: widths only
    ]))  # fmt: skip
    result = script.main(["--from", runs, "--name", "s", "--results-dir", str(tmp_path)])
    cvs = []
    for layer in ([95, 105, 120], [80, 95, 100]):  # mlp-n60k at its seed mean
        m = sum(layer) / 3
        cvs.append(math.sqrt(sum((v - m) ** 2 for v in layer) / 3) / m)  # population sd / mean
    assert result["checks"]["batch_width_cv"] == pytest.approx(cvs)


def test_matrix_summary_takes_dense_from_another_file_where_a_cell_says_dense_null(tmp_path):
    script = _script("matrix_summary")
    cell = _cell("mlp-n3k", 0, 0.20, [30, 70])
    cell["dense"] = None  # how merged files write a cell without its dense run
    runs = str(_matrix_file(tmp_path / "a.json", [cell]))
    dense = str(_matrix_file(tmp_path / "d.json", [_cell("mlp-n3k", 0, 0.5, [1, 1], dense=0.18)]))
    result = script.main(["--from", runs, "--dense-from", dense, "--name", "s",
                          "--results-dir", str(tmp_path)])  # fmt: skip
    assert result["matrix_summary"]["mlp-n3k"]["gaps"] == pytest.approx([2.0])


def test_checks_gap_and_failures_match_a_hand_computation():
    script = _script("robustness_matrix")
    cells = [
        _cell("mlp-n3k", 0, 0.20, [30, 70], dense=0.18),
        _cell("mlp-n3k", 1, 0.19, [34, 76], dense=0.18),
        _cell("mlp-n10k", 0, 0.15, [60, 90], dense=0.146, status="collapsed"),
        _cell("mlp-n10k", 1, 0.16, [62, 92], status="failed"),  # no dense: not in the gap
    ]
    checks = script.checks(cells)
    assert checks["gap_points"] == pytest.approx({"mlp-n3k": (2.0 + 1.0) / 2, "mlp-n10k": 0.4})
    assert checks["collapsed"] == ["mlp-n10k/0", "mlp-n10k/1"]


def test_checks_widths_are_seed_means():
    script = _script("robustness_matrix")
    cells = [
        _cell("mlp-lr3e-4", 0, 0.1, [95, 80]),
        _cell("mlp-n60k", 0, 0.1, [100, 90]),
        _cell("mlp-n60k", 1, 0.1, [110, 100]),
        _cell("mlp-lr3e-3", 0, 0.1, [120, 100]),
    ]
    cvs = []
    for layer in ([95, 105, 120], [80, 95, 100]):
        m = sum(layer) / 3
        cvs.append(math.sqrt(sum((v - m) ** 2 for v in layer) / 3) / m)
    assert script.checks(cells)["lr_width_cv"] == pytest.approx(cvs)


def test_widths_falling_by_exactly_ten_percent_are_within_the_tolerance():
    script = _script("robustness_matrix")
    assert script.non_decreasing([[100, 50], [90, 45], [90, 45]]) is True  # 10%: allowed
    assert script.non_decreasing([[100, 50], [89, 45]]) is False
    assert script.non_decreasing([[100, 50], [100, 44]]) is False  # a later layer falls too


def test_dense_from_pairs_each_run_with_its_own_seeds_dense_run_of_its_recipe(
    tmp_path, monkeypatch
):
    script = _script("robustness_matrix")
    dense = tmp_path / "dense.json"
    dense.write_text(json.dumps({"commit": "abc", "cells": [
        _cell("mlp-n3k", 0, 0.5, [1, 1], dense=0.18),
        _cell("mlp-n3k", 1, 0.5, [1, 1], dense=0.17),
        _cell("mlp-n3k", 0, 0.5, [1, 1], dense=0.30, overrides={"epochs": 20}),  # other recipe
    ]}))  # fmt: skip
    errors = {0: 0.20, 1: 0.19}
    monkeypatch.setattr(script, "run_cell", lambda case, seed, overrides, with_dense: {
        "case": case, "seed": seed, "overrides": overrides,
        "bayesprune": {"test_error": errors[seed], "widths": [30, 70], "status": "finished"}})
    script.main(["--cells", "mlp-n3k", "--seeds", "0", "1", "--jobs", "1", "--dense-from",
                 str(dense), "--results-dir", str(tmp_path)])  # fmt: skip
    result = json.loads((tmp_path / "robustness_matrix.json").read_text())
    assert [c["dense"]["test_error"] for c in result["cells"]] == [0.18, 0.17]
    assert result["checks"]["gap_points"]["mlp-n3k"] == pytest.approx((2.0 + 2.0) / 2)


def test_dense_from_without_a_runs_dense_run_is_refused_before_any_run(tmp_path, monkeypatch):
    script = _script("robustness_matrix")
    dense = tmp_path / "dense.json"
    dense.write_text(json.dumps({"commit": "abc", "cells": [
        _cell("mlp-n3k", 0, 0.5, [1, 1], dense=0.18),
        _cell("mlp-n3k", 1, 0.5, [1, 1], dense=0.30, overrides={"epochs": 20}),  # other recipe
    ]}))  # fmt: skip
    ran = []
    monkeypatch.setattr(script, "run_cell", lambda *a: ran.append(a))
    with pytest.raises(SystemExit) as stop:
        script.main(["--cells", "mlp-n3k", "--seeds", "0", "1", "--jobs", "1", "--dense-from",
                     str(dense), "--results-dir", str(tmp_path)])  # fmt: skip
    assert stop.value.code == 2 and ran == []


def test_matrix_axes_reads_seed_means_and_the_summaries_gaps(tmp_path):
    script = _script("matrix_axes")
    summary = {"matrix_summary": {
        # at the target, as the difference of two test errors gives it (0.1334 − 0.1284)
        "mlp-n60k": _axes_row([100.0, 90.0], [90, 80], [110, 95], gap=0.5000000000000004),
        "mlp-n10k": _axes_row([60.0, 80.0], [55, 70], [120, 100], gap=0.55),  # above it
        "mlp-n30k": _axes_row([80.0, 85.0], [70, 80], [90, 90]),  # no dense run
        "mlp-b32": _axes_row([95.0, 85.0], [90, 80], [100, 90], gap=0.0),  # level with dense
        "mlp-b256": _axes_row([120.0, 100.0], [110, 95], [130, 105], gap=0.6),
        "mlp-lr3e-4": _axes_row([110.0, 88.0], [100, 80], [120, 96], gap=0.3),
        "mlp-lr3e-3": _axes_row([90.0, 92.0], [85, 90], [95, 94], gap=0.1),
    }}  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(summary))
    result = script.main(["--from", str(tmp_path / "s.json"), "--results-dir", str(tmp_path)])
    axes = result["matrix_axes"]["mlp"]
    n = {p["case"]: p for p in axes["N"]["points"]}
    assert n["mlp-n60k"]["gap_met"] is True  # 0.5 ≤ 0.5, whatever the float makes of it
    assert n["mlp-n10k"]["gap_met"] is False  # 0.55 > 0.5, even if 0.55 − se ≤ 0.5
    assert n["mlp-n10k"]["gap_se"] == 0.1 and n["mlp-n10k"]["gap_mean"] == 0.55
    assert n["mlp-n30k"]["gap_met"] is None
    assert axes["batch"]["points"][0]["gap_met"] is True  # a gap of 0 meets the target
    assert axes["N"]["non_decreasing"] is True  # means 60 → 80 → 100, 80 → 85 → 90
    assert axes["batch"]["width_cv"] == pytest.approx([_pop_cv([95, 100, 120]),
                                                      _pop_cv([85, 90, 100])])  # fmt: skip
    assert axes["lr"]["width_cv"] == pytest.approx([_pop_cv([110, 100, 90]),
                                                   _pop_cv([88, 90, 92])])  # fmt: skip
    assert [p["value"] for p in axes["lr"]["points"]] == [3e-4, 1e-3, 3e-3]
    assert [p["value"] for p in axes["batch"]["points"]] == [32, 100, 256]
    assert [p["value"] for p in axes["N"]["points"]] == [10_000, 30_000, 60_000]
    common = _script("common")
    table = "\n".join(common.render_matrix_axes("matrix_axes", result))
    assert ("| LeNet-300-100 | training examples | 30000 | mlp-n30k | 2 | "
            "80.0 (70-90)-85.0 (80-90) | - | 0.5 | - |") in table  # fmt: skip
    assert "| mlp-n10k | 2 | 60.0 (55-120)-80.0 (70-100) | +0.55 ± 0.10 | 0.5 | **no** |" in table
    assert "| mlp-n60k | 2 | 100.0 (90-110)-90.0 (80-95) | +0.50 ± 0.10 | 0.5 | yes |" in table
    assert "| mlp-b32 | 2 | 95.0 (90-100)-85.0 (80-90) | +0.00 ± 0.10 | 0.5 | yes |" in table


def test_l0_table_means_gaps_over_the_runs_with_a_dense_run():
    common = _script("common")
    result = {
        "rows": [_l0_row(0, 0.150, 0.140), _l0_row(1, 0.160, 0.145)],
        "bayesprune": [_l0_row(0, 0.148, 0.140, widths=(60, 50), kept=0.3),
                       _l0_row(1, 0.170, None, widths=(64, 54), kept=0.4)],  # no dense run
        "cells": ["mlp-n10k"], "seeds": [0, 1], "lambdas": [0.1], "gate_lrs": [0.1],
        "commit": "abc", "threads": 1,
    }  # fmt: skip
    lines = common.render_l0_baseline("l0", result)
    # by hand: L0 gaps 1.0 and 1.5 → +1.25; bayesprune only seed 0 → +0.80
    assert "| L0 λ 0.1, gate lr 0.1 | mlp-n10k | 2 | 50-40 | 20.0 | +1.25 | 0 |" in lines
    assert "| bayesprune (default) | mlp-n10k | 2 | 62-52 | 35.0 | +0.80 | 0 |" in lines


def test_a_gap_of_exactly_the_target_is_met_whatever_floating_point_makes_of_it():
    """50 of 10,000 test examples worse than dense is 0.50 points, issue 9's bound (≤ 0.5); as
    the difference of two test errors it came out 0.5000000000000004 and was called missed
    (for most error levels between 5% and 30%), in matrix_summary and in matrix_axes after it."""
    cells = [_cell("mlp-n10k", seed, b, [60, 90], dense=d)
             for seed, (b, d) in enumerate([(0.1334, 0.1284), (0.1434, 0.1384)])]  # fmt: skip
    row = _script("matrix_summary").summarise(cells)["mlp-n10k"]
    assert row["gap_mean"] > 0.5  # the float the difference makes: the case this is about
    assert row["gap_met"] is True


def test_two_files_with_different_dense_runs_of_one_cell_and_seed_are_refused(tmp_path, capsys):
    """The first file's dense run used to be taken silently, so a gap depended on the order of
    --from; equal dense runs in both files pool as one."""
    script = _script("matrix_summary")
    first, same, other = (
        str(_matrix_file(tmp_path / name, [_cell("mlp-n10k", 0, 0.150, [60, 90], dense=dense)]))
        for name, dense in (("a.json", 0.145), ("b.json", 0.145), ("c.json", 0.141))
    )
    args = ["--name", "s", "--results-dir", str(tmp_path)]
    row = script.main(["--from", first, same, *args])["matrix_summary"]["mlp-n10k"]
    assert row["gaps"] == pytest.approx([0.5])
    with pytest.raises(SystemExit, match="mlp-n10k seed 0 has a dense run at 0.141"):
        script.main(["--from", first, other, *args])


def test_runs_the_settle_budget_left_whole_pool_with_settle_on_and_not_with_runs_before_it(
    tmp_path,
):
    """Under the default (``auto``) a run whose budget left no layer out was settled as under
    ``--set settle=on``: the two pool. A run from before the settle (no ``settled`` in its
    summary), or with the budget leaving a layer out, is another cell."""
    script = _script("matrix_summary")

    def run(name, seed, overrides=None, **summary):
        cell = _cell("mlp-n10k", seed, 0.15, [60, 90], dense=0.145, overrides=overrides)
        cell["bayesprune"].update(summary)
        return str(_matrix_file(tmp_path / name, [cell]))

    on = run("on.json", 0, {"settle": "on"}, settled={"fc1": 1, "fc2": 0})
    auto = run("auto.json", 1, settled={"fc1": 0, "fc2": 2}, settle_skipped=[])
    before = run("before.json", 2)  # no settled: a run from before the settle
    partly = run("partly.json", 3, settled={"fc1": 0, "fc2": 1}, settle_skipped=["fc1"])
    args = ["--name", "s", "--results-dir", str(tmp_path)]
    row = script.main(["--from", on, auto, *args])["matrix_summary"]["mlp-n10k"]
    assert row["gaps"] == pytest.approx([0.5, 0.5])
    for other in (before, partly):
        with pytest.raises(SystemExit, match="not the same cell"):
            script.main(["--from", on, other, *args])
