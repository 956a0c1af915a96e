import subprocess
import sys
from pathlib import Path

from lmx.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_runs_a_config(capsys):
    rc = main(
        [
            "smoke",
            str(ROOT / "configs" / "tiny.py"),
            "--steps",
            "2",
            "--set",
            "model.n_layers=1",
            "--set",
            "train.batch_size=8",
            "--set",
            "data.seq_len=32",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "step 2: loss" in out


def test_config_errors_print_one_line_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "lmx.cli", "smoke", str(ROOT / "configs" / "tiny.py"), "--set", "model.d_modle=64"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown config key 'model.d_modle'; did you mean model.d_model" in proc.stderr


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in readme


def test_tokenizer_train_and_data_prepare(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 20)
    corpus = f"text:{src}/*.py"
    assert (
        main(["tokenizer", "train", "--corpus", corpus, "--vocab-size", "300", "--out", str(tmp_path / "t.model")]) == 0
    )
    overrides = [
        f"data.corpus={corpus}",
        f"data.dir={tmp_path / 'data'}",
        "model.vocab_size=300",
        "data.validation_fraction=0.2",
    ]
    args = ["data", "prepare", str(ROOT / "configs" / "tiny.py")]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "train:" in out and "validation:" in out and "training a bpe tokenizer" in out
    assert main(args) == 0  # up to date: nothing trained or tokenized again
    assert "training" not in capsys.readouterr().out
    assert (
        main(["tokenizer", "train", "--corpus", f"text:{tmp_path}/none/*.txt", "--vocab-size", "300", "--out", "x"])
        == 2
    )
    assert "matches no files" in capsys.readouterr().err
