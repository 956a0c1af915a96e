"""The SLURM scripts (one multi-process run; sweeps of them) and the Kubernetes example: their text, and
the scripts' logic run for real with stand-ins for srun, scontrol and sbatch (no JAX processes)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from lmx.cli import main
from lmx.cluster.slurm import srun_line, submit, write_train_script
from lmx.errors import ClusterError, ConfigError
from lmx.scaling.launch import write_slurm
from lmx.scaling.sweep import Point, Sweep

K8S_EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "kubernetes" / "lmx-indexed-job.yaml"


def sbatch_options(script: Path) -> dict[str, str]:
    """The script's ``#SBATCH --key[=value]`` lines as {key: value} ("" for a flag)."""
    options = {}
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            options[key] = value
    return options


def srun_command(script: Path) -> list[str]:
    """The script's srun line, as the argument list bash runs."""
    [line] = [line for line in script.read_text().splitlines() if line.startswith("srun ")]
    return shlex.split(line.removesuffix(" || status=$?"))


def fake_bin(tmp_path: Path, **scripts: str) -> Path:
    """A directory of executables named after the keywords, each a bash script with that body, which
    first appends its name and arguments (one line, shell-quoted) to ``<tmp_path>/calls.log``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/bash\necho "{name} ${{*@Q}}" >> {shlex.quote(str(tmp_path / "calls.log"))}\n{body}\n')
        path.chmod(0o755)
    return bin_dir


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "calls.log"
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_train_script_for_two_nodes_of_eight_gpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "small"
    script = write_train_script(
        ["configs/small.py", "--set", "train.steps=10"],
        "runs/small",  # relative: made absolute
        nodes=2,
        gpus_per_node=8,
        directives=["time=4:00:00", "--account=lm"],
        python="/opt/py/bin/python",
    )
    assert script == run_dir / "slurm" / "train.sbatch" and script.stat().st_mode & 0o777 == 0o755
    subprocess.run(["bash", "-n", str(script)], check=True)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/bash" and lines[1].startswith("# lmx training run small: 2 nodes x 8 processes")
    assert sbatch_options(script) == {
        "job-name": "lmx-small",
        "nodes": "2",
        "ntasks-per-node": "8",
        "gpus-per-node": "8",
        "output": f"{run_dir}/slurm/%j.out",
        "open-mode": "append",
        "requeue": "",
        "signal": "TERM@120",
        "time": "4:00:00",
        "account": "lm",
    }
    assert srun_command(script) == [
        *shlex.split(srun_line(2, 8)),
        *("/opt/py/bin/python", "-m", "lmx.cli", "train", "configs/small.py", "--set", "train.steps=10"),
        *("--run-dir", str(run_dir)),
    ]
    assert srun_line(2, 8).startswith("srun --nodes=2 --ntasks-per-node=8 --kill-on-bad-exit=1 --wait=")
    assert "export PYTHONUNBUFFERED=1" in lines and f"cd {tmp_path}" in lines
    # Nothing binds GPUs to tasks: each process must see all of its node's GPUs.
    assert "gpus-per-task" not in sbatch_options(script) and "--gpu-bind" not in " ".join(srun_command(script))


def test_one_process_per_node_and_cpu_nodes(tmp_path):
    per_node = write_train_script(["c.py"], tmp_path / "a", nodes=4, gpus_per_node=8, per="node", grace_s=600)
    options = sbatch_options(per_node)
    assert options["ntasks-per-node"] == "1" and options["gpus-per-node"] == "8" and options["signal"] == "TERM@600"
    assert srun_command(per_node)[:3] == ["srun", "--nodes=4", "--ntasks-per-node=1"]
    # One process per node drives all 8 GPUs (JAX's SLURM detection alone would give it GPU 0).
    [line] = [x for x in per_node.read_text().splitlines() if "JAX_LOCAL_DEVICE_IDS" in x]
    shown = subprocess.run(
        ["bash", "-c", f"{line}; echo $JAX_LOCAL_DEVICE_IDS"],
        env={"SLURM_GPUS_ON_NODE": "8", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "0,1,2,3,4,5,6,7"
    per_gpu = write_train_script(["c.py"], tmp_path / "d", nodes=4, gpus_per_node=8)
    assert "JAX_LOCAL_DEVICE_IDS" not in per_gpu.read_text()  # there JAX's one GPU per process is right
    cpu = write_train_script(["c.py"], tmp_path / "b", nodes=2, gpus_per_node=0)
    assert "gpus-per-node" not in sbatch_options(cpu) and sbatch_options(cpu)["ntasks-per-node"] == "1"
    with pytest.raises(ConfigError, match="--run-dir"):
        write_train_script(["c.py", "--run-dir", "x"], tmp_path / "c", nodes=1, gpus_per_node=1)
    with pytest.raises(ConfigError, match="nodes=0"):
        write_train_script(["c.py"], tmp_path / "c", nodes=0, gpus_per_node=1)


# The stand-in for srun: the run's processes, which exit with $SRUN_STATUS and, with $SRUN_FINISHES,
# complete the run (its summary.json) first. The run directory is the last argument.
FAKE_SRUN = """run_dir="${@: -1}"
if [[ -n "${SRUN_FINISHES:-}" ]]; then echo '{}' > "$run_dir/summary.json"; fi
exit "${SRUN_STATUS:-0}"
"""


@pytest.mark.parametrize(
    ("srun_status", "finishes", "script_status", "requeued"),
    [
        (0, True, 0, False),  # the run completed
        (0, False, 0, True),  # stopped before the time limit with a checkpoint: continue in the queue
        (3, False, 3, False),  # a process lost a peer: the job fails, no requeue loop
        (137, True, 0, False),  # completed, then a process hung at exit and srun ended it
    ],
)
def test_train_script_requeues_only_a_run_stopped_with_a_checkpoint(
    tmp_path, srun_status, finishes, script_status, requeued
):
    script = write_train_script(["c.py"], tmp_path / "run", nodes=2, gpus_per_node=4)
    bin_dir = fake_bin(tmp_path, srun=FAKE_SRUN, scontrol="exit 0")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SLURM_JOB_ID": "4242",
        "SRUN_STATUS": str(srun_status),
        "SRUN_FINISHES": "1" if finishes else "",
    }
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == script_status, done.stdout + done.stderr
    [srun, *rest] = calls(tmp_path)
    assert srun[0] == "srun" and srun[1:] == srun_command(script)[1:]
    assert rest == ([["scontrol", "requeue", "4242"]] if requeued else [])
    if requeued:
        assert "requeueing job 4242" in done.stdout
    if script_status:
        assert f"exit status {script_status}" in done.stderr


def test_submit_runs_sbatch_and_returns_the_job_id(tmp_path, monkeypatch):
    script = write_train_script(["c.py"], tmp_path / "run", nodes=1, gpus_per_node=2)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ClusterError, match="sbatch is not installed"):
        submit(script)
    bin_dir = fake_bin(tmp_path, sbatch="echo 12345")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert submit(script) == "12345"
    assert calls(tmp_path) == [["sbatch", "--parsable", str(script)]]
    fake_bin(tmp_path, sbatch="echo '678;cluster-a'")
    assert submit(script) == "678"  # --parsable on a federation: "<id>;<cluster>"
    fake_bin(tmp_path, sbatch="echo 'sbatch: error: Batch job submission failed: Invalid account' >&2; exit 1")
    with pytest.raises(
        ClusterError, match="exit code 1.*: sbatch: error: Batch job submission failed: Invalid account$"
    ):
        submit(script)


def test_sweep_of_multi_process_runs_goes_through_srun(tmp_path):
    sweep = Sweep("multi", tiny_config(), [Point("a"), Point("b")])
    runs = sweep.runs()
    script = write_slurm(sweep, runs, tmp_path / "sweep", nodes=2, tasks_per_node=4)
    subprocess.run(["bash", "-n", str(script)], check=True)
    options = sbatch_options(script)
    assert options["nodes"] == "2" and options["ntasks-per-node"] == "4" and options["array"] == "0-1"
    assert f'eval "{srun_line(2, 4)} ${{COMMANDS[$task]}}"' in script.read_text()
    # Array task 1 runs run b's command through srun, as one argument list.
    bin_dir = fake_bin(tmp_path, srun="exit 0")
    env = {"SLURM_ARRAY_TASK_ID": "1", "PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True)
    b = tmp_path / "sweep"
    train = [sys.executable, "-m", "lmx.cli", "train", str(b / "configs" / "b.json"), "--run-dir", str(b / "b")]
    assert calls(tmp_path) == [[*shlex.split(srun_line(2, 4)), *train]]
    # One process per run (the default): the script has no srun and asks for no nodes.
    single = write_slurm(sweep, runs, tmp_path / "single")
    assert "srun" not in single.read_text() and "nodes" not in sbatch_options(single)


SWEEP_FILE = """
from lmx.config import Config
from lmx.scaling.sweep import Point, Sweep

def get_sweep():
    return Sweep("cli-multi", Config(), [Point("a")])
"""


def test_sweep_command_takes_nodes_and_tasks_per_node_for_slurm(tmp_path, capsys):
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP_FILE)
    out = tmp_path / "out"
    argv = ["sweep", str(path), "--dir", str(out), "--nodes", "2", "--tasks-per-node", "8"]
    assert main([*argv, "--launcher", "slurm", "--sbatch-option=gpus-per-node=8"]) == 0
    options = sbatch_options(out / "sweep.sbatch")
    assert options["nodes"] == "2" and options["ntasks-per-node"] == "8" and options["gpus-per-node"] == "8"
    assert srun_line(2, 8) in (out / "sweep.sbatch").read_text()
    assert main(argv) == 2  # the local launcher runs one process per run
    assert "apply to --launcher slurm" in capsys.readouterr().err


def test_kubernetes_example_has_what_jax_detection_reads():
    docs = [d for d in yaml.safe_load_all(K8S_EXAMPLE.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs)  # one of each
    job, service = by_kind["Job"], by_kind["Service"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert job["apiVersion"] == "batch/v1" and spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == 2  # JAX takes parallelism as the process count
    assert spec["backoffLimit"] >= 1 and pod["restartPolicy"] == "Never"
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    # Process 0 is <job>-0.<subdomain>: a headless Service named as the subdomain, selecting the pods.
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    # The pods run as a ServiceAccount that may list pods and get Jobs.
    account = by_kind["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    binding = by_kind["RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lmx-train"}
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in by_kind["Role"]["rules"]}
    assert by_kind["Role"]["metadata"]["name"] == "lmx-train"
    assert {"get", "list"} <= rules[("",), ("pods",)] and "get" in rules[("batch",), ("jobs",)]
    # The run directory is on a volume every pod mounts read-write.
    [container] = pod["containers"]
    claim = by_kind["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    [volume] = [v for v in pod["volumes"] if v["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    run_dir = {e["name"]: e["value"] for e in container["env"]}["RUN_DIR"]
    assert run_dir == "/shared/runs/small" and run_dir.startswith(mount["mountPath"] + "/")
    assert "lmx train configs/small.py" in container["args"][0] and '--run-dir "$RUN_DIR"' in container["args"][0]
    # Stopped early (exit 0 without summary.json) becomes 75, which the Job retries without counting it.
    ignored = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "Ignore" and "onExitCodes" in r]
    assert ignored[0]["onExitCodes"]["values"] == [75] and "exit 75" in container["args"][0]


def test_kubernetes_example_command_exits_zero_only_for_a_complete_run(tmp_path):
    """The pod's command with a stand-in for `lmx train` that exits with $STATUS (and with $FINISH,
    writes the summary first)."""
    docs = [d for d in yaml.safe_load_all(K8S_EXAMPLE.read_text()) if d]
    [container] = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]["containers"]
    bin_dir = fake_bin(
        tmp_path, lmx='if [[ -n "$FINISH" ]]; then echo "{}" > "$RUN_DIR/summary.json"; fi\nexit "$STATUS"'
    )
    for status, finish, expected in [(0, "1", 0), (0, "", 75), (3, "", 3), (137, "1", 0)]:
        run_dir = tmp_path / f"run-{status}-{finish}"
        run_dir.mkdir()
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RUN_DIR": str(run_dir), "STATUS": str(status), "FINISH": finish}
        done = subprocess.run([*container["command"], container["args"][0]], env=env)
        assert done.returncode == expected, (status, finish)
