"""ARCHITECTURE.md stays true: the modules it names exist, its layer table covers the
package, and no module imports from a layer above its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "newsletter"
MAP = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
# store/models.py is the shared vocabulary (the status enums and row types): every layer may name it.
VOCABULARY = "newsletter.store.models"


def _layers() -> list[tuple[str, list[str]]]:
    """(layer, its entries such as "due.py" or "store/") from the table, top layer first."""
    rows = []
    for line in MAP.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("Layer", "---"):
            entries = re.findall(r"`([^`]+)`", cells[1])
            if entries:
                rows.append((cells[0], entries))
    return rows


LAYERS = _layers()
RANK = {entry: rank for rank, (_, entries) in enumerate(LAYERS) for entry in entries}


def _entry(module: str) -> str | None:
    """The table entry a dotted module name falls under ("newsletter.store.clicks" -> "store/")."""
    parts = module.split(".")
    if parts[0] != "newsletter" or len(parts) < 2:
        return None
    for candidate in (parts[1] + "/", parts[1] + ".py"):
        if candidate in RANK:
            return candidate
    return None


def _package_entries() -> set[str]:
    found = set()
    for path in PACKAGE.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            found.add(path.name + "/")
        elif path.suffix == ".py" and path.name != "__init__.py":
            found.add(path.name)
    return found


def test_the_map_has_its_layers() -> None:
    assert [name for name, _ in LAYERS] == ["Interfaces", "Orchestration", "Engine", "Edges", "Pure core", "Foundation"]


def test_every_module_in_the_layer_table_exists() -> None:
    assert sorted(set(RANK) - _package_entries()) == []


def test_every_module_of_the_package_is_in_the_layer_table() -> None:
    """A new module gets its place on the map when it is added."""
    assert sorted(_package_entries() - set(RANK)) == []


@pytest.mark.parametrize("path", sorted(set(re.findall(r"`(\w+/[\w/]+\.py)`", MAP))))
def test_every_path_the_map_names_exists(path: str) -> None:
    """Whole paths (newsletter/due.py, tests/faults.py) and paths inside the package (store/holds.py)."""
    assert (ROOT / path).is_file() or (PACKAGE / path).is_file()


def _sources(module: str) -> list[Path]:
    """The files a dotted reference's first part may name: a module, a store module, a package."""
    paths = [PACKAGE / f"{module}.py", PACKAGE / "store" / f"{module}.py", PACKAGE / module / "__init__.py"]
    return [path for path in paths if path.is_file()]


# `due.decide`, `deliveries.mark_sent`, ...: references whose first part is one of our modules
# (not settings such as `smtp.connections`, nor attributes such as `DeliveryError.code`).
NAMED = sorted(
    found
    for found in set(re.findall(r"`(\w+\.[A-Za-z_]+)`", MAP))
    if not found.endswith(".py") and _sources(found.split(".")[0])
)


def test_the_map_names_functions() -> None:
    assert len(NAMED) >= 5


@pytest.mark.parametrize("dotted", NAMED)
def test_every_module_function_the_map_names_exists(dotted: str) -> None:
    module, name = dotted.split(".")
    defined = rf"^\s*(def|class) {name}\b|^{name}\b\s*[:=]|^from .* import .*\b{name}\b|^\s+{name},\s*$"
    texts = [path.read_text(encoding="utf-8") for path in _sources(module)]
    assert any(re.search(defined, text, re.M) for text in texts), f"{dotted} is not defined any more"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every newsletter module ``path`` imports, top-level or inside a function, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "newsletter":
                found += [(node.lineno, f"newsletter.{alias.name}") for alias in node.names]
            elif node.module.startswith("newsletter."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("newsletter.")]
    return found


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _entry(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if own is None:
            continue
        for line, module in _imports(path):
            other = _entry(module)
            if other is None or other == own or module.startswith(VOCABULARY):
                continue
            if RANK[other] < RANK[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {module} ({other})")
    assert upward == []
