"""No import cycles in the product (launcher/, adapters/), read from the source with `ast`.

Every import counts, those inside functions included: a deferred import keeps start-up fast, it does not make
two modules any less tied. Only imports under `if TYPE_CHECKING:` are left out (they never run).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("launcher", "adapters")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "bundled" not in path.parts  # scripts shipped for backends to run, not imported
    }


def imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The product modules `module` imports, anywhere in its body but under `if TYPE_CHECKING:`."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(filter(None, (resolve(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            found.update(filter(None, (resolve(f"{base}.{alias.name}") for alias in node.names)))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    known = product_modules()
    return {module: imported(module, path, known) for module, path in known.items()}


def test_the_product_has_no_import_cycle() -> None:
    graph = import_graph()
    assert {"launcher.cli", "launcher.stack", "adapters.base"} <= graph.keys()
    assert "launcher.cli_files" in graph["launcher.cli"], "the reader must see imports (a sanity check)"
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_supervision_does_not_import_the_proxy() -> None:
    graph = import_graph()
    for module, imports in graph.items():
        if module.startswith("launcher.supervision"):
            assert "launcher.proxy" not in imports, module
            assert not {m for m in imports if m.startswith("launcher.bridge.") and m != "launcher.bridge.upstream"}, (
                f"{module} may use the proxy's seam (launcher.bridge.upstream) only"
            )
