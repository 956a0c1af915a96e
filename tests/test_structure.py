"""The package's shape: imports follow the layer order written in docs/ARCHITECTURE.md, no
subpackages import each other in a cycle, and no module outgrows ~400 lines. Imports are read with
`ast` (nothing is executed), lazy imports inside functions included."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def written_layers(architecture: Path) -> list[list[str]]:
    """The layer list in the ```layers fenced block: one line per layer, units comma-separated,
    lines after the first starting with ``->``."""
    match = re.search(r"```layers\n(.*?)```", architecture.read_text(), re.S)
    if match is None:
        raise AssertionError(f"{architecture}: no ```layers block")
    lines = [line.strip().removeprefix("->").strip() for line in match.group(1).splitlines() if line.strip()]
    return [[unit.strip() for unit in line.split(",")] for line in lines]


def module_imports(package_dir: Path, package: str) -> dict[str, set[str]]:
    """``{module: {imported modules of the package}}`` for every .py file under `package_dir`."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        module = ".".join(parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = parts if is_package else parts[:-1]
                    base = base[: len(base) - node.level + 1]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                imported.add(name)
                imported |= {f"{name}.{alias.name}" for alias in node.names}  # `from pkg import module`
        out[module] = {m for m in imported if m == package or m.startswith(package + ".")}
    return out


def unit_of(module: str, package: str) -> str | None:
    """The unit a module belongs to: its subpackage or top-level module (None for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == package else None


def check_structure(package_dir: Path, package: str, layers: list[list[str]]) -> list[str]:
    """Every problem found: unknown units, imports against the layer order, and cycles between
    units (each naming its modules)."""
    layer_of = {unit: i for i, units in enumerate(layers) for unit in units}
    imports = module_imports(package_dir, package)
    problems, edges = [], {}
    known_modules = set(imports)
    for module, imported in sorted(imports.items()):
        unit = unit_of(module, package)
        if unit is None:
            continue
        if unit not in layer_of:
            problems.append(f"{module}: unit {unit!r} is in no layer of the written order")
            continue
        for target in sorted(imported):
            if target not in known_modules:  # `from pkg.mod import name`: name is no module
                continue
            other = unit_of(target, package)
            if other is None or other == unit or other not in layer_of:
                continue
            edges.setdefault(unit, {}).setdefault(other, []).append(f"{module} -> {target}")
            if layer_of[other] >= layer_of[unit]:
                problems.append(
                    f"{module} imports {target}: {other!r} (layer {layer_of[other]}) is not below "
                    f"{unit!r} (layer {layer_of[unit]})"
                )
    for cycle in unit_cycles(edges):
        hops = [edges[a][b][0] for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)]
        problems.append(f"import cycle {' -> '.join([*cycle, cycle[0]])}: {'; '.join(hops)}")
    return problems


def unit_cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """One cycle per strongly connected group of units (Tarjan's algorithm, then a path in it)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:  # walk inside the group from its smallest unit until a unit repeats
        path, v = [], min(group)
        while v not in path:
            path.append(v)
            v = min(w for w in edges[v] if w in group)
        cycles.append(path[path.index(v) :])
    return cycles


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_lmx_follows_the_written_layer_order():
    layers = written_layers(ROOT / "docs" / "ARCHITECTURE.md")
    assert check_structure(ROOT / "lmx", "lmx", layers) == []
    units = {p.stem if p.is_file() else p.name for p in (ROOT / "lmx").iterdir() if p.name != "__init__.py"}
    units = {u for u in units if not u.startswith("__")}
    assert units == {unit for layer in layers for unit in layer}, "every unit of lmx/ has a layer"


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "lmx").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_check_names_the_modules_of_a_cycle(tmp_path):
    package_dir = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "",
            "pkg/a/low.py": "from pkg.b.high import thing\n",
            "pkg/b/__init__.py": "",
            "pkg/b/high.py": "def f():\n    from pkg.a import low  # a lazy import counts too\n",
        },
    )
    problems = check_structure(package_dir, "pkg", [["a", "b"]])
    cycles = [p for p in problems if p.startswith("import cycle")]
    assert len(cycles) == 1
    assert "pkg.a.low -> pkg.b.high" in cycles[0] and "pkg.b.high -> pkg.a" in cycles[0]


@pytest.mark.parametrize("layers", [[["a"], ["b"]], [["a", "b"]]])
def test_the_check_names_an_import_against_the_order(tmp_path, layers):
    package_dir = write_package(
        tmp_path,
        {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "X = 1\n", "pkg/c.py": "import pkg.a\n"},
    )
    problems = check_structure(package_dir, "pkg", layers)
    assert any(p.startswith("pkg.a imports pkg.b:") for p in problems), problems
    assert any("'c' is in no layer" in p for p in problems)
    # The same import in the written direction is fine.
    assert check_structure(package_dir, "pkg", [["b"], ["a"], ["c"]]) == []
