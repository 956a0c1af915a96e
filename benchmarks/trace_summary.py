"""The device time in a `jax.profiler` trace, by kernel or op name: where a step's time goes.

    python benchmarks/trace_summary.py TRACE_DIR_OR_FILE [--top 25]

Reads the trace viewer's JSON (`*.trace.json.gz`, which `jax.profiler.trace` writes beside its
xplane file) and sums the complete events of every device process (on CPU, the host's), so a GPU
step's cuBLAS, cuDNN, Triton and fused kernels are ranked by the time they took.
"""

import argparse
import collections
import gzip
import json
from pathlib import Path


def trace_file(path: Path) -> Path:
    return path if path.is_file() else sorted(path.rglob("*.trace.json.gz"))[-1]


def device_time(path: Path) -> tuple[collections.Counter, collections.Counter]:
    """(microseconds, events) by (line, name) over the device processes' lines: on a GPU, a stream's
    kernels and XLA's op lines are separate lines, each summed on its own."""
    with gzip.open(trace_file(path)) as f:
        events = json.load(f)["traceEvents"]
    meta = [e for e in events if e.get("ph") == "M"]
    processes = {e["pid"]: e["args"].get("name", "") for e in meta if e.get("name") == "process_name"}
    lines = {(e["pid"], e["tid"]): e["args"].get("name", "") for e in meta if e.get("name") == "thread_name"}
    devices = {pid for pid, name in processes.items() if "/device:" in name} or set(processes)
    time_us, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["pid"] in devices:
            key = (f"{processes[e['pid']]} {lines.get((e['pid'], e['tid']), e['tid'])}", e["name"])
            time_us[key] += e.get("dur", 0)
            count[key] += 1
    return time_us, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    time_us, count = device_time(args.trace)
    per_line = collections.Counter()
    for (line, _), us in time_us.items():
        per_line[line] += us
    for line, total in per_line.most_common():
        print(f"{line}: {total / 1e3:,.1f} ms")
    for (line, name), us in time_us.most_common(args.top):
        print(f"{us / 1e3:10,.1f} ms {us / per_line[line]:6.1%} {count[line, name]:7,}x  {line[-24:]}  {name[:100]}")


if __name__ == "__main__":
    main()
