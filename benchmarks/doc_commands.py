"""The command sequences the documents give, read and run as a reader would (tests/test_docs_*.py).

A document's commands are the lines of its ```bash blocks in Markdown, or the lines of a Python
module's docstring that start with `lmx ` or `python ` (the shipped configs give their recipes
there), in the order written. A trailing backslash joins a line to the next; `# ...` comments are
kept in `Command.text` but not run.

`run_sequence` runs them one after another in one directory through bash, with the project's
virtual environment first on PATH, so `lmx` and `python` are the ones under test. `Budget` says
how a test may change a command without changing what it shows: arguments appended to a command
that matches a pattern (fewer steps), or a command left out with the reason and the test that
covers it instead (a 40-minute sweep). A rule that no command matched is an error, so the rules
cannot outlive the text they were written for.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclasses.dataclass(frozen=True)
class Command:
    text: str  # as written, continuation lines joined, without its trailing comment
    where: str  # "README.md:31"


def _join_lines(lines: list[tuple[int, str]], label: str) -> list[Command]:
    """Commands from (line number, text) pairs: backslash continuations joined, comments dropped."""
    commands, pending, start = [], "", 0
    for number, raw in lines:
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        text = _strip_comment(pending + line)
        pending = ""
        if text:
            commands.append(Command(text, f"{label}:{start}"))
    if pending:
        raise ValueError(f"{label}:{start}: a continuation line ends the block")
    return commands


def _strip_comment(line: str) -> str:
    """The command without a trailing `# comment`: a `#` that starts a word outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def markdown_sections(path: Path) -> dict[str, list[Command]]:
    """The commands of every ```bash (or ```sh) block of a Markdown file, in order, grouped by the
    `## ` section they are in (commands before the first such heading come under "")."""
    label = str(path.relative_to(ROOT))
    sections: dict[str, list[tuple[int, str]]] = {"": []}
    current, inside = "", False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = line.strip()
        if fence.startswith("```"):
            if inside:
                inside = False
            elif fence[3:].strip() in ("bash", "sh", "shell"):
                inside = True
            continue
        if inside:
            sections[current].append((number, line))
        elif line.startswith("## "):
            current = line[3:].strip()
            sections.setdefault(current, [])
    return {name: _join_lines(lines, label) for name, lines in sections.items()}


def markdown_commands(path: Path) -> list[Command]:
    """Every command of a Markdown file's ```bash blocks, in order."""
    return [command for commands in markdown_sections(path).values() for command in commands]


def docstring_commands(path: Path) -> list[Command]:
    """The `lmx ...` / `python ...` lines of a module's docstring (with their continuations)."""
    label = str(path.relative_to(ROOT))
    module = ast.parse(path.read_text())
    doc_node = module.body[0] if module.body and isinstance(module.body[0], ast.Expr) else None
    if doc_node is None or not isinstance(doc_node.value, ast.Constant):
        return []
    doc = ast.get_docstring(module, clean=False) or ""
    lines, continuing = [], False
    for offset, raw in enumerate(doc.splitlines()):
        line = raw.strip()
        if continuing or line.startswith(("lmx ", "python ")):
            lines.append((doc_node.lineno + offset, line))
            continuing = line.endswith("\\")
    return _join_lines(lines, label)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How a test may change a document's commands: `extra` appends arguments to every command that
    matches a regular expression (searched in the command's text), `skip` leaves out the commands
    that match exactly, each with why and where its path is tested instead, and `replace` swaps a
    part of a command (same reason format) for what a test can run."""

    extra: tuple[tuple[str, str], ...] = ()
    skip: tuple[tuple[str, str], ...] = ()
    replace: tuple[tuple[str, str, str], ...] = ()

    def apply(self, command: Command, used: set[str]) -> str | None:
        """The command to run, or None to leave it out; records the rules that matched in `used`."""
        for text, _why in self.skip:
            if command.text == text:
                used.add(text)
                return None
        run = command.text
        for old, new, _why in self.replace:
            if old in run:
                used.add(old)
                run = run.replace(old, new)
        for pattern, arguments in self.extra:
            # Each part of `a && b` gets the arguments of the patterns it matches.
            parts = run.split(" && ")
            for i, part in enumerate(parts):
                if re.search(pattern, part):
                    used.add(pattern)
                    parts[i] = f"{part} {arguments}"
            run = " && ".join(parts)
        return run

    def unused(self, commands: list[Command]) -> list[str]:
        """The rules that match none of `commands` (a document's, so stale rules are found)."""
        used: set[str] = set()
        for command in commands:
            self.apply(command, used)
        rules = [p for p, _ in self.extra] + [t for t, _ in self.skip] + [o for o, _, _ in self.replace]
        return [rule for rule in rules if rule not in used]


@dataclasses.dataclass(frozen=True)
class Ran:
    command: Command
    run: str | None  # what was run (None: left out)
    seconds: float
    output: str


def environment() -> dict[str, str]:
    """A reader's shell: one CPU device (no forced device count), the venv first on PATH, wandb
    offline (no network here)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["WANDB_MODE"] = "offline"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def prepare_directory(directory: Path) -> Path:
    """A fresh directory holding what a clone has that the commands read (configs, experiments,
    docs and benchmarks), copied so that no command can change the repository."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("configs", "experiments", "docs", "benchmarks"):
        shutil.copytree(ROOT / name, directory / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    return directory


class CommandFailedError(AssertionError):
    pass


def run_sequence(
    commands: list[Command], directory: Path, budget: Budget = Budget(), timeout: float = 600
) -> list[Ran]:
    """Runs `commands` in order in `directory`; the first that fails (or makes XLA fall back from
    its Shardy partitioner to GSPMD) raises CommandFailedError naming where the document gives it,
    what ran, its exit status and the end of its output."""
    used: set[str] = set()
    ran = []
    env = environment()
    for command in commands:
        run = budget.apply(command, used)
        if run is None:
            ran.append(Ran(command, None, 0.0, ""))
            continue
        start = time.perf_counter()
        proc = subprocess.run(
            ["bash", "-c", f"set -eo pipefail; {run}"],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-15:])
            raise CommandFailedError(
                f"{command.where}: `{command.text}` failed (exit {proc.returncode}); ran `{run}` in "
                f"{directory}:\n{tail}"
            )
        if "GSPMD" in proc.stderr:  # XLA fell back from Shardy: a sharding lmx emits is not Shardy's
            line = next(x for x in proc.stderr.splitlines() if "GSPMD" in x)
            raise CommandFailedError(f"{command.where}: `{command.text}` printed XLA's GSPMD fallback: {line}")
        ran.append(Ran(command, run, time.perf_counter() - start, output))
    return ran
