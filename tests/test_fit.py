"""Scaling-law fits recover known truth; bad input gets clear errors."""

import json

import numpy as np
import pytest

from lmx.cli import main
from lmx.errors import DataError, FitError
from lmx.scaling.bootstrap import run_fit
from lmx.scaling.fit import fit_isoflop, fit_parametric, fit_power_law, parametric_optimum
from lmx.scaling.points import Points, load_points

# Hoffmann et al. 2022's fitted law (approach 3) as the known truth.
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def law(N, D):
    return TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


def random_points(n=100, noise=0.005, seed=0) -> Points:
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e12), n))
    loss = law(N, D) * np.exp(rng.normal(0, noise, n))
    return Points(N, D, loss, 6 * N * D, None, tuple(f"p{i}" for i in range(n)), "synthetic")


def isoflop_points(budgets, sizes=7, noise=0.0, seed=0) -> Points:
    """Points on IsoFLOP profiles (C = 6 N D) centred on the true compute-optimal N."""
    rng = np.random.default_rng(seed)
    truth = dict(TRUE, flops_per_param_token=6.0)
    N, D, C, budget = [], [], [], []
    for c in budgets:
        n_opt, _ = parametric_optimum(truth, c)
        for n in n_opt * np.exp(np.linspace(-1.5, 1.5, sizes)):
            N.append(n)
            D.append(c / (6 * n))
            C.append(c)
            budget.append(c)
    N, D = np.array(N), np.array(D)
    loss = law(N, D) * np.exp(rng.normal(0, noise, len(N)))
    return Points(N, D, loss, np.array(C), np.array(budget), tuple(f"p{i}" for i in range(len(N))), "isoflop")


@pytest.fixture(scope="module")
def parametric_fit():
    return run_fit(random_points(), "3", resamples=200, budget=1e22)


def test_parametric_fit_recovers_the_known_law(parametric_fit):
    # 100 points, 0.5% multiplicative noise. Tolerances: E within 2%, the exponents within 0.02,
    # A and B within 25% (they trade off against the exponents along a flat ridge).
    fit = parametric_fit
    assert fit["E"] == pytest.approx(TRUE["E"], rel=0.02)
    assert fit["alpha"] == pytest.approx(TRUE["alpha"], abs=0.02)
    assert fit["beta"] == pytest.approx(TRUE["beta"], abs=0.02)
    assert fit["A"] == pytest.approx(TRUE["A"], rel=0.25)
    assert fit["B"] == pytest.approx(TRUE["B"], rel=0.25)
    true_a = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert fit["a"] == pytest.approx(true_a, abs=0.02)
    assert fit["a"] + fit["b"] == pytest.approx(1.0)
    assert fit["huber_delta"] == 1e-3


def test_bootstrap_intervals_contain_the_truth(parametric_fit):
    intervals = parametric_fit["intervals"]
    for key, value in TRUE.items():
        lo, hi = intervals[key]
        assert lo <= value <= hi, (key, lo, value, hi)
        assert lo <= parametric_fit[key] <= hi
    n_true, d_true = parametric_optimum(dict(TRUE, flops_per_param_token=6.0), 1e22)
    assert intervals["N_opt"][0] <= n_true <= intervals["N_opt"][1]
    assert intervals["D_opt"][0] <= d_true <= intervals["D_opt"][1]
    assert parametric_fit["bootstrap"]["resamples"] == 200 and parametric_fit["bootstrap"]["failed"] == 0
    # Not a degenerate interval: the data's noise must show.
    assert intervals["alpha"][1] - intervals["alpha"][0] > 1e-3


def test_compute_optimal_allocation_spends_the_budget():
    fit = dict(TRUE, flops_per_param_token=6.0)
    N, D = parametric_optimum(fit, 1e21)
    assert pytest.approx(1e21) == 6 * N * D
    # A minimum: moving along the budget either way raises the loss.
    for factor in (0.9, 1.1):
        assert law(N * factor, D / factor) > law(N, D)


def test_isoflop_analysis_recovers_the_known_exponent():
    points = isoflop_points([1e18, 1e19, 1e20, 1e21], noise=0.001)
    fit = fit_isoflop(points)
    true_a = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert fit["a"] == pytest.approx(true_a, abs=0.01)
    assert fit["b"] == pytest.approx(1 - true_a, abs=0.01)
    assert all(m["inside"] for m in fit["minima"])
    result = run_fit(points, "2", resamples=100, budget=1e22)
    lo, hi = result["intervals"]["a"]
    assert lo <= true_a <= hi


def test_power_law_recovers_known_frontier():
    C = np.geomspace(1e15, 1e21, 8)
    loss = 1.5 + 30.0 * C**-0.1
    points = Points(C / 1e10, np.full(8, 1e10 / 6), loss, C, C, tuple(map(str, range(8))), "frontier")
    fit = fit_power_law(points)
    assert fit["E"] == pytest.approx(1.5, rel=1e-3)
    assert fit["b"] == pytest.approx(0.1, rel=1e-3)
    assert fit["a"] == pytest.approx(30.0, rel=1e-2)
    no_e = fit_power_law(Points(C / 1e10, np.full(8, 1e10 / 6), 30.0 * C**-0.1, C, C, points.names, "f"), False)
    assert no_e["b"] == pytest.approx(0.1, rel=1e-6) and no_e["E"] == 0.0


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.csv", "N,loss\n1e6,3.0\n", r"missing.csv: missing column\(s\) D"),
        (
            "negative.csv",
            "N,D,loss\n1e6,1e8,3.0\n-5,1e8,3.1\n",
            r"negative.csv:3: N=-5 must be a positive finite number",
        ),
        ("zero.csv", "N,D,loss\n1e6,0,3.0\n", r"zero.csv:2: D=0"),
        ("text.csv", "N,D,loss\n1e6,many,3.0\n", r"text.csv:2: D='many' is not a number"),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_points(path)


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_points(tmp_path / "nope.csv")


def test_too_few_points_for_the_requested_fit():
    few = random_points(n=5)
    with pytest.raises(FitError, match="needs >= 6 points, got 5"):
        fit_parametric(few)
    with pytest.raises(FitError, match="approach 3 needs >= 6 points"):
        run_fit(few, "3")
    two_sizes = isoflop_points([1e18, 1e19], sizes=2)
    with pytest.raises(FitError, match="budget 1e\\+18 has 2 model sizes; an IsoFLOP parabola needs >= 3"):
        fit_isoflop(two_sizes)
    one_budget = isoflop_points([1e18], sizes=7)
    with pytest.raises(FitError, match="needs >= 2 budgets"):
        fit_isoflop(one_budget)
    with pytest.raises(FitError, match="needs >= 3 budgets"):
        fit_power_law(isoflop_points([1e18, 1e19]))


def test_concave_profile_is_an_error_not_a_minimum():
    points = isoflop_points([1e18, 1e19])
    concave = Points(
        points.N, points.D, 5 - (np.log(points.N) - 20) ** 2 / 100, points.C, points.budget, points.names, "concave"
    )
    with pytest.raises(FitError, match="not convex in log N"):
        fit_isoflop(concave)


def test_fit_cli_writes_json_and_plots(tmp_path, capsys):
    points = isoflop_points([1e18, 1e19, 1e20], noise=0.002)
    csv = tmp_path / "runs.csv"
    rows = ["N,D,loss,C"] + [
        f"{n},{d},{loss},{c}" for n, d, loss, c in zip(points.N, points.D, points.loss, points.C, strict=True)
    ]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "fit" / "fit.json"
    args = [
        "fit",
        str(csv),
        "--approach",
        "3",
        "2",
        "power",
        "--bootstrap",
        "50",
        "--budget",
        "1e21",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "alpha" in printed and "95% interval" in printed and "N_opt" in printed
    fits = json.loads(out.read_text())
    assert set(fits) == {"3", "2", "power"}
    for key in ("E", "A", "B", "alpha", "beta"):
        assert key in fits["3"] and len(fits["3"]["intervals"][key]) == 2
    for name in ("isoflop.png", "optimal.png"):
        png = out.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # One approach: its keys at the top level, as the JSON asks.
    assert main(["fit", str(csv), "--approach", "3", "--json", str(tmp_path / "one.json")]) == 0
    assert {"E", "A", "B", "alpha", "beta"} <= set(json.loads((tmp_path / "one.json").read_text()))
    bad = tmp_path / "bad.csv"
    bad.write_text("N,loss\n1,2\n")
    assert main(["fit", str(bad)]) == 2
    assert "missing column(s) D" in capsys.readouterr().err
