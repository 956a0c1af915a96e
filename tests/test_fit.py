"""Scaling-law fits recover known truth; bad input gets clear errors."""

import json
import re

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
    # What each fit used: the power law fits the 3-budget frontier, approach 3 names k of C = k N D.
    assert f"fitted to the compute frontier (3 budgets' lowest losses) of {len(points)} points" in printed
    assert "C = k N D with k = 6" in printed
    assert "no loss_curves.png: a CSV holds no training curves" in printed
    fits = json.loads(out.read_text())
    assert set(fits) == {"3", "2", "power"}
    for key in ("E", "A", "B", "alpha", "beta"):
        assert key in fits["3"] and len(fits["3"]["intervals"][key]) == 2
    for name in ("isoflop.png", "optimal.png"):
        png = out.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # One approach: its keys at the top level, as the JSON asks.
    assert main(["fit", str(csv), "--approach", "power"]) == 0
    assert "nothing written: give --json FILE" in capsys.readouterr().out
    assert main(["fit", str(csv), "--approach", "3", "--json", str(tmp_path / "one.json")]) == 0
    assert {"E", "A", "B", "alpha", "beta"} <= set(json.loads((tmp_path / "one.json").read_text()))
    bad = tmp_path / "bad.csv"
    bad.write_text("N,loss\n1,2\n")
    assert main(["fit", str(bad)]) == 2
    assert "missing column(s) D" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------
# Input a user might hand over: every shape is read, or is one line naming the file (and line).

FIT_CSV = "N,D,loss\n1e6,2e7,3.1\n2e6,4e7,2.9\n"


@pytest.mark.parametrize(
    "text",
    [
        "N,D,loss,\n1e6,2e7,3.1,\n2e6,4e7,2.9,\n",  # a trailing comma everywhere: an empty unnamed column
        "N,D,loss\n1e6,2e7,3.1,\n2e6,4e7,2.9,,\n",  # trailing commas on the rows only
        "N,D,loss,\n1e6,2e7,3.1\n2e6,4e7,2.9\n",  # ... on the header only
        "N,D,loss\r\n1e6,2e7,3.1\r\n\r\n2e6,4e7,2.9\r\n,,\r\n",  # CRLF, a blank line, a row of commas
        "N;D;loss\n1e6;2e7;3.1\n2e6;4e7;2.9\n",  # semicolons
        "N\tD\tloss\n1e6\t2e7\t3.1\n2e6\t4e7\t2.9\n",  # tabs
    ],
    ids=["trailing-comma", "trailing-comma-rows", "trailing-comma-header", "crlf-blank", "semicolons", "tabs"],
)
def test_csv_with_empty_columns_and_other_separators_is_read(tmp_path, text):
    path = tmp_path / "runs.csv"
    path.write_text(text, newline="")
    points = load_points(path)
    np.testing.assert_array_equal(points.N, [1e6, 2e6])
    np.testing.assert_array_equal(points.D, [2e7, 4e7])
    np.testing.assert_array_equal(points.loss, [3.1, 2.9])
    assert points.C is None


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom"])
def test_csv_in_utf8_or_utf16_is_read(tmp_path, encoding):
    text = "N,D,loss,C,name\n1e6,2e7,3.1,1.2e14,café\n2e6,4e7,2.9,4.8e14,naïve\n"
    if encoding.endswith("-bom"):  # UTF-16 with a byte-order mark in either byte order
        codec = encoding.removesuffix("-bom")
        data = "\ufeff".encode(codec) + text.encode(codec)
    else:
        data = text.encode(encoding)
    path = tmp_path / "runs.csv"
    path.write_bytes(data)
    points = load_points(path)
    np.testing.assert_array_equal(points.N, [1e6, 2e6])
    np.testing.assert_array_equal(points.C, [1.2e14, 4.8e14])
    assert points.names == ("café", "naïve")


MALFORMED = [
    ("empty.csv", b"", r"empty.csv: empty file; expected a CSV with the header N,D,loss"),
    ("blank.csv", b"\n  \n", r"blank.csv: empty file"),
    ("commas.csv", b",,,\n", r"commas.csv: no header and no data"),
    ("header.csv", b"N,D,loss\n", r"header.csv: no data rows \(only the header, line 1\)"),
    ("noheader.csv", b"1e6,2e7,3.1\n", r"noheader.csv: missing column\(s\) N, D, loss; .*data, not a header"),
    ("short.csv", b"N,D,loss\n1e6,2e7,3.1\n1e6,2e7\n", r"short.csv:3: 2 fields, but the header \(line 1\) has 3$"),
    ("long.csv", b"N,D,loss\n1,000,000,2e7,3.1\n", r"long.csv:2: 5 fields, .* \(extra '2e7', '3.1'; .*"),
    ("dup.csv", b"N,D,loss,loss\n1,2,3,4\n", r"dup.csv:1: column loss appears 2 times"),
    ("quote.csv", b'N,D,loss\n"1e6,2e7,3.1\n1,2,3\n', r"quote.csv:2: 1 field, .*never closed"),
    ("word.csv", b"N,D,loss\n\n1e6,2e7,3.1\n1e6,2e7,low\n", r"word.csv:4: loss='low' is not a number"),
    ("nan.csv", b"N,D,loss\n1e6,2e7,nan\n", r"nan.csv:2: loss=nan must be a positive finite number"),
    ("binary.csv", bytes(range(128, 256)) * 4, r"binary.csv:1: not UTF-8/UTF-16 text \(byte 0x80 at offset 0"),
    ("latin1.csv", "N,D,loss,name\n1,2,3,café\n".encode("latin-1"), r"latin1.csv:2: not UTF-8/UTF-16 text"),
    ("nul.csv", FIT_CSV.encode() + b"\x00\x00\x01", r"nul.csv:4: not UTF-8/UTF-16 text \(it holds NUL bytes"),
    ("torn.csv", FIT_CSV.encode() + b"\xc3", r"torn.csv:4: not UTF-8/UTF-16 text \(byte 0xc3"),
    ("runs.json", b'[{"N": 1e6, "D": 2e7, "loss": 3.1}]\n', r"runs.json: this is JSON, not CSV"),
    ("summary.csv", b'{"tokens": 1}\n', r"summary.csv: this is JSON, not CSV"),
    ("sheet.xlsx", b"PK\x03\x04\x14\x00\x06\x00", r"sheet.xlsx: a zip archive \(an .xlsx spreadsheet\?\)"),
    ("runs.csv.gz", b"\x1f\x8b\x08\x00", r"runs.csv.gz: gzip-compressed"),
]


@pytest.mark.parametrize(("name", "data", "message"), MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_input_is_one_line_naming_file_and_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as info:
        load_points(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("binary.csv", bytes(range(256)) * 8),
        ("garbage.csv", FIT_CSV.encode() + b"\xff\xfe\x00garbage\x9c"),  # a good CSV, then junk
        ("utf16-no-bom.csv", FIT_CSV.encode("utf-16-le")),
    ],
    ids=["binary", "trailing-garbage", "utf16-without-bom"],
)
def test_fit_cli_names_an_unreadable_file_on_one_line(tmp_path, capsys, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    assert main(["fit", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = captured.err
    assert line.count("\n") == 1 and line.startswith(f"lmx fit: error: {path}:") and "Traceback" not in line
    assert "not UTF-8/UTF-16 text" in line


def write_run(sweep_dir, name, d_model, tokens, loss):
    """A finished run directory as `lmx train` leaves it: config.json and summary.json."""
    from lmx.config import Config, DataConfig, ModelConfig

    model = ModelConfig(vocab_size=512, d_model=d_model, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=4 * d_model)
    cfg = Config(name=name, model=model, data=DataConfig(seq_len=64))
    run_dir = sweep_dir / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    summary = {"name": name, "steps": 10, "tokens": tokens, "train_time_s": 5.0, "final_eval": {"eval/loss": loss}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir


def cut(path, fraction=0.5):
    """`path` as a process killed halfway through writing it leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.fixture
def torn_sweep(tmp_path):
    """Eight good runs, an unfinished one, and runs whose files a killed process or a user broke."""
    sweep = tmp_path / "sweep"
    for i, d_model in enumerate([32, 64, 96, 128, 160, 192, 224, 256]):
        tokens = 1e6 * 2 ** (i % 4)
        write_run(sweep, f"good{i}", d_model, tokens, 1.7 + 40 / d_model + 3e3 / tokens**0.5)
    cut(write_run(sweep, "cut-summary", 64, 1e6, 3.0) / "summary.json")
    cut(write_run(sweep, "cut-config", 64, 1e6, 3.0) / "config.json", 0.3)
    (write_run(sweep, "empty-summary", 64, 1e6, 3.0) / "summary.json").write_text("")
    (write_run(sweep, "edited-summary", 64, 1e6, 3.0) / "summary.json").write_text('{"tokens": 1e6,}\n')
    (write_run(sweep, "list-summary", 64, 1e6, 3.0) / "summary.json").write_text("[]\n")
    write_run(sweep, "diverged", 64, 1e6, float("nan"))
    (write_run(sweep, "no-config", 64, 1e6, 3.0) / "config.json").unlink()
    (write_run(sweep, "bad-config", 64, 1e6, 3.0) / "config.json").write_text('{"model": {"d_model": "big"}}\n')
    (write_run(sweep, "running", 64, 1e6, 3.0) / "summary.json").unlink()
    return sweep


def test_runs_with_cut_off_or_broken_files_are_named_and_left_out(torn_sweep):
    points = load_points(torn_sweep)
    assert points.names == tuple(f"good{i}" for i in range(8))
    assert points.unfinished == ("running",)
    why = dict(points.unusable)
    assert re.fullmatch(r"config.json: cut off at line \d+ \(killed while writing\?\)", why.pop("cut-config"))
    assert why == {
        "bad-config": "config.json: model.d_model='big': expected an integer",
        "cut-summary": "summary.json: cut off at line 5 (killed while writing?)",
        "diverged": "summary.json: final_eval['eval/loss']=nan is not a finite number",
        "edited-summary": "summary.json: not valid JSON at line 1 column 16 (Expecting property name enclosed in "
        "double quotes)",
        "empty-summary": "summary.json: empty (killed while writing?)",
        "list-summary": "summary.json: expected a JSON object, found a JSON list",
        "no-config": "config.json: missing (a summary.json without it)",
    }
    with pytest.raises(DataError, match=r"no final_eval\['eval/ppl'\] \(it has eval/loss\)"):
        load_points(torn_sweep, metric="eval/ppl")


def test_fit_cli_fits_the_readable_runs_and_names_the_others(torn_sweep, capsys):
    assert main(["fit", str(torn_sweep), "--approach", "3", "--starts", "4"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err == ""
    notes = [line for line in captured.out.splitlines() if line.startswith("note:")]
    assert notes[0] == "note: 1 runs have no summary.json yet, left out: running"
    assert notes[1].startswith("note: 8 runs left out, their files cannot be used: bad-config/config.json: ")
    assert "cut-summary/summary.json: cut off at line 5 (killed while writing?)" in notes[1]
    assert "alpha" in captured.out


def test_directories_without_usable_runs_are_named(tmp_path, torn_sweep):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no runs in it \(no \*/summary.json\)"):
        load_points(empty)
    with pytest.raises(DataError, match=r"good0: this is one run's directory; give the sweep directory"):
        load_points(torn_sweep / "good0")
    waiting = tmp_path / "waiting"
    (waiting / "a").mkdir(parents=True)
    (waiting / "a" / "config.json").write_text("{}\n")
    with pytest.raises(DataError, match=r"waiting: no finished runs yet \(1 without summary.json: a\)"):
        load_points(waiting)
    broken = tmp_path / "broken"
    cut(write_run(broken, "a", 32, 1e6, 3.0) / "summary.json")
    write_run(broken, "b", 32, 1e6, float("inf"))
    with pytest.raises(DataError, match=r"broken: no usable finished runs: a/summary.json: cut off .* \(and 1 more\)"):
        load_points(broken)
    assert main(["fit", str(broken)]) == 2


# -------------------------------------------------------------------------------------------------
# Points that can be committed, and the plots of a study.

# A law at the scale of tiny models (losses of 2-4 nats); its optimum N is about Hoffmann's.
SMALL = {"E": 1.8, "A": 40.0, "B": 41.0, "alpha": 0.34, "beta": 0.28}
WIDTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256)  # 8k to 2.1M non-embedding parameters


def write_isoflop_sweep(root, budgets=(1e11, 1e12, 1e13), sizes=5, noise=0.003, seed=0, curves=True):
    """A finished IsoFLOP sweep as `lmx sweep` leaves it, without training: per budget `sizes`
    widths around the optimum of `SMALL` (C = 6 N D, N non-embedding), final losses from the law
    with multiplicative noise, and (`curves`) a metrics.jsonl whose loss falls towards it."""
    from lmx.config import Config, DataConfig, ModelConfig, SweepConfig, TrainConfig
    from lmx.model.flops import param_counts

    rng = np.random.default_rng(seed)
    for i, budget in enumerate(budgets):
        for d_model in WIDTHS[2 * i : 2 * i + sizes]:
            model = ModelConfig(vocab_size=512, d_model=d_model, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=4 * d_model)
            n = param_counts(model).by_definition("6n")
            tokens = budget / (6 * n)
            coords = (("budget", budget), ("flops_definition", "6n"), ("model", f"d{d_model}"), ("params", n))
            name = f"C{budget:.0e}-d{d_model}".replace("+", "")
            steps = int(tokens // 1024) + 1
            cfg = Config(
                name=name,
                model=model,
                data=DataConfig(seq_len=64),
                train=TrainConfig(steps=steps),
                sweep=SweepConfig(name="synthetic", coords=coords),
            )
            run_dir = root / name
            run_dir.mkdir(parents=True)
            (run_dir / "config.json").write_text(cfg.to_json() + "\n")
            small = lambda n, d: SMALL["E"] + SMALL["A"] / n ** SMALL["alpha"] + SMALL["B"] / d ** SMALL["beta"]
            loss = small(n, tokens) * np.exp(rng.normal(0, noise))
            final_eval = {"eval/loss": loss, "eval/bits_per_byte": loss / np.log(2) / 2.1}
            summary = {"steps": steps, "tokens": tokens, "train_time_s": 1.5, "final_eval": final_eval}
            (run_dir / "summary.json").write_text(json.dumps(summary) + "\n")
            if curves:
                seen = np.geomspace(tokens / 100, tokens, 30)
                rows = [
                    {"step": s, "loss": small(n, t) + rng.normal(0, 0.02), "tokens_seen": t} for s, t in enumerate(seen)
                ]
                (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def comparable(fit):
    """A fit result without where it came from (the source's path) or its in-memory parts."""
    return {k: v for k, v in fit.items() if k != "source" and not k.startswith("_")}


def assert_plots(directory, names):
    """Exactly these PNG files in `directory`, each a real picture (not an empty figure)."""
    assert sorted(path.name for path in directory.glob("*.png")) == sorted(names)
    for name in names:
        data = (directory / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name


def test_saved_points_fit_exactly_as_the_sweep_directory(tmp_path, capsys):
    sweep = write_isoflop_sweep(tmp_path / "sweep")
    saved = tmp_path / "points.csv"
    common = ["--approach", "2", "3", "power", "--starts", "4", "--bootstrap", "20", "--budget", "1e14"]
    from_dir, from_csv = tmp_path / "dir" / "fit.json", tmp_path / "csv" / "fit.json"
    assert main(["fit", str(sweep), "--save-points", str(saved), "--json", str(from_dir), *common]) == 0
    assert f"wrote {saved} (15 points)" in capsys.readouterr().out
    assert main(["fit", str(saved), "--json", str(from_csv), *common]) == 0
    assert "no loss_curves.png: a CSV holds no training curves" in capsys.readouterr().out
    fits_dir, fits_csv = json.loads(from_dir.read_text()), json.loads(from_csv.read_text())
    for approach in ("2", "3", "power"):  # identical: values, intervals and (2, 3) bands
        assert comparable(fits_csv[approach]) == comparable(fits_dir[approach]), approach
    assert "band" in fits_csv["2"] and "band" in fits_csv["3"]
    # The file: one row per run, exact floats, and what else the runs recorded as extra columns.
    header, *rows = saved.read_text().splitlines()
    columns = header.split(",")
    assert columns[:6] == ["name", "budget", "N", "D", "C", "loss"] and len(rows) == 15
    for extra in ("train.steps", "tokens", "train_time_s", "eval/bits_per_byte", "model.d_model", "sweep.model"):
        assert extra in columns
    points, again = load_points(sweep), load_points(saved)
    for key in ("N", "D", "C", "loss", "budget"):
        np.testing.assert_array_equal(getattr(again, key), getattr(points, key))
    assert again.names == points.names
    # Every plot, from either source; the loss curves only from the runs.
    assert_plots(from_dir.parent, ["isoflop.png", "optimal.png", "approach3.png", "loss_curves.png"])
    assert_plots(from_csv.parent, ["isoflop.png", "optimal.png", "approach3.png"])


def test_without_approach_3_there_is_no_approach3_plot(tmp_path, capsys):
    """approach3.png is drawn only when approach 3 was fitted; the other plots do not need it."""
    sweep = write_isoflop_sweep(tmp_path / "sweep")
    assert main(["fit", str(sweep), "--approach", "2", "power", "--plots", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    assert "approach3.png" not in printed and "nothing written" not in printed
    assert_plots(tmp_path / "plots", ["isoflop.png", "optimal.png", "loss_curves.png"])
    # Power alone: no allocation to draw, only the profiles and the frontier.
    assert main(["fit", str(sweep), "--approach", "power", "--plots", str(tmp_path / "power")]) == 0
    assert_plots(tmp_path / "power", ["isoflop.png", "loss_curves.png"])


@pytest.mark.parametrize("approach", ["2", "3"])
def test_allocation_bands_bracket_the_fitted_law(approach):
    from lmx.scaling.bootstrap import allocation, public

    points = isoflop_points([1e18, 1e19, 1e20], noise=0.003, seed=1)
    fit = run_fit(points, approach, resamples=40, budget=1e22, starts=8)
    band = fit["band"]
    C = np.asarray(band["C"])
    # The grid spans the points' compute and the budget, with room either side.
    assert C[0] <= 1e18 / 2 * 1.0001 and C[-1] >= 1e22 * 2 * 0.9999 and len(C) >= 20
    for which, estimate in zip(("N_opt", "D_opt"), allocation(approach, fit, C), strict=True):
        lower, upper = np.asarray(band[which]["lower"]), np.asarray(band[which]["upper"])
        assert np.all(lower <= estimate) and np.all(estimate <= upper), which
        assert np.all(upper > lower * 1.01), which  # the data's noise shows: not a line
    # The resamples stay in memory for plots, but out of the JSON.
    samples = fit["_samples"]
    assert len(samples["a"]) == 40 - fit["bootstrap"]["failed"]
    assert "_samples" not in public(fit) and json.dumps(public(fit))


def test_a_budget_column_groups_points_whose_compute_differs(tmp_path):
    # Runs of one budget spend a little more or less than it (whole steps): 9.99e11 and 1e12.
    rows = [
        (n, c * spent / (6 * n), 3 + abs(float(np.log(n / 1e5))), c * spent, c)
        for c in (1e12, 1e13)
        for n, spent in ((3e4, 0.999), (1e5, 1.0), (3e5, 1.002))
    ]
    path = tmp_path / "budgets.csv"
    path.write_text("N,D,loss,C,budget\n" + "".join(",".join(map(repr, row)) + "\n" for row in rows))
    points = load_points(path)
    np.testing.assert_array_equal(points.budget, [1e12] * 3 + [1e13] * 3)
    assert {k: len(v) for k, v in points.groups().items()} == {1e12: 3, 1e13: 3}
    without = tmp_path / "no-budget.csv"
    without.write_text("N,D,loss,C\n" + "".join(",".join(map(repr, row[:4])) + "\n" for row in rows))
    assert sorted(load_points(without).groups()) == [9.99e11, 1e12, 9.99e12, 1e13]  # by C alone they fall apart
    bad = tmp_path / "bad.csv"
    bad.write_text("N,D,loss,budget\n1e6,2e7,3.1,big\n")
    with pytest.raises(DataError, match=r"bad.csv:2: budget='big' is not a number"):
        load_points(bad)
