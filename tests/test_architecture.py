"""The house's shape, read from the source: imports point down the layers, no module reads
another's private names, and modules and functions stay small (DESIGN.md, Layout).

The layers, lowest first; a module may import its own package and any lower layer:

    0  files/, assets/      (reading and writing files; the shipped files)
    1  the flat modules     (schedule, grids, wrapper, calibration, noise, images, checks, ...)
    2  samplers/, models/   (the model never imports a sampler, nor a sampler a model)
    3  runtime/
    4  compat/
    5  jobs/, train/, tuning/
    6  metrics/
    7  cli/

``pndm/__init__.py`` is the public facade (lazy re-exports of every layer) and is not ranked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pndm"
RANKS = {
    "files": 0,
    "assets": 0,
    "samplers": 2,
    "models": 2,
    "runtime": 3,
    "compat": 4,
    "jobs": 5,
    "train": 5,
    "tuning": 5,
    "metrics": 6,
    "cli": 7,
}
FLAT = 1
# Underscore names that are public API of the standard library or torch, not private names.
# _version: a tensor's version counter (torch documents no other way to see in-place writes)
PUBLIC_UNDERSCORE = {
    "_replace",
    "_asdict",
    "_fields",
    "_make",
    "_exit",
    "_get_help_string",
    "_version",
}
MAX_MODULE_LINES = 400
MAX_CLI_MODULE_LINES = 250
MAX_FUNCTION_LINES = 40
# argparse builders and UNet2DModel.__init__ (diffusers' signature) may be longer (issue 21).
LONG_FUNCTIONS_ALLOWED = {("models/unet_2d.py", "__init__")}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(name: str) -> str:
    """The room of a module: its first package below pndm, or "" for a flat module."""
    parts = name.split(".")
    if len(parts) >= 2 and (SRC / parts[1]).is_dir():
        return parts[1]
    return ""


def rank(name: str) -> int:
    return RANKS.get(package_of(name), FLAT)


def imported_modules(tree: ast.AST, importer: str) -> list[tuple[int, str]]:
    """(line, module) of every pndm import, function-level and TYPE_CHECKING ones included;
    ``from pndm.pkg import name`` counts as importing ``pndm.pkg.name`` when that is a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("pndm")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pndm"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (SRC.parent / sub.replace(".", "/")).with_suffix(".py").is_file()
                is_package = (SRC.parent / sub.replace(".", "/")).is_dir()
                found.append((node.lineno, sub if is_module or is_package else node.module))
    return found


def upward_imports(path: Path, name: str | None = None) -> list[str]:
    """Imports of the module at ``path`` (named ``name``, default: from its path) that point up."""
    name = name or module_name(path)
    if name == "pndm":
        return []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    mine = package_of(name)
    bad = []
    for line, target in imported_modules(tree, name):
        theirs = package_of(target)
        if target == "pndm" or theirs == mine:
            continue
        if rank(target) >= rank(name):
            bad.append(f"{name}:{line} imports {target} (layer {rank(target)})")
    return bad


def private_reads(path: Path) -> list[str]:
    """``from pndm.m import _x``, and ``obj._x`` on anything but ``self``, ``cls`` or
    ``super()`` (an object of another class, even of the same module, keeps its privacy)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.name if SRC not in path.parents else path.relative_to(SRC)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pndm"):
            bad += [
                f"{where}:{node.lineno} imports {node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = node.value
            ours = isinstance(base, ast.Name) and base.id in ("self", "cls")
            inherited = isinstance(base, ast.Call) and ast.unparse(base.func) == "super"
            if not (ours or inherited or node.attr in PUBLIC_UNDERSCORE):
                bad.append(f"{where}:{node.lineno} reads {ast.unparse(node)}")
    return bad


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def long_functions(path: Path) -> list[str]:
    where = path.relative_to(SRC)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        builder = where.parts[0] == "cli" and node.name.startswith("add")
        allowed = builder or (where.as_posix(), node.name) in LONG_FUNCTIONS_ALLOWED
        if length > MAX_FUNCTION_LINES and not allowed:
            bad.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return bad


def test_the_layers_are_known() -> None:
    """Every package under src/pndm has a layer, so a new room cannot slip past this test."""
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(RANKS)


def test_imports_point_down_the_layers() -> None:
    bad = [line for path in modules() for line in upward_imports(path)]
    assert not bad, "imports that point up (DESIGN.md, Layout):\n" + "\n".join(bad)


def test_no_module_reads_another_modules_private_names() -> None:
    bad = [line for path in modules() for line in private_reads(path)]
    assert not bad, "private names read from outside their module:\n" + "\n".join(bad)


def test_modules_and_functions_stay_small() -> None:
    big = []
    for path in modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        limit = MAX_CLI_MODULE_LINES if package_of(module_name(path)) == "cli" else MAX_MODULE_LINES
        if lines > limit:
            big.append(f"{path.relative_to(SRC)} ({lines} lines > {limit})")
    big += [line for path in modules() for line in long_functions(path)]
    assert not big, "\n".join(big)


def test_at_most_twelve_flat_modules() -> None:
    flat = [p.name for p in SRC.glob("*.py")]
    assert len(flat) <= 12, flat


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("from pndm.compat.pipeline import PNDMPipeline\n", "imports pndm.compat.pipeline"),
        ("from pndm.samplers import ddim\n", "imports pndm.samplers.ddim"),
        ("import pndm.cli\n", "imports pndm.cli"),
    ],
)
def test_an_upward_import_is_caught(tmp_path: Path, source: str, problem: str) -> None:
    """A planted upward import in a model module (layer 2) fails the direction test, and the
    same line in a cli module (layer 7) passes."""
    planted = tmp_path / "planted.py"
    planted.write_text(source, encoding="utf-8")
    assert any(problem in line for line in upward_imports(planted, "pndm.models.planted"))
    assert not upward_imports(planted, "pndm.cli.planted")


def test_a_private_read_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("def f(pipe):\n    return pipe._eps_fn, pipe.eps_fn\n", encoding="utf-8")
    assert private_reads(planted) == ["planted.py:2 reads pipe._eps_fn"]
