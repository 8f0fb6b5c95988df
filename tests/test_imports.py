"""mlc's rule for imports inside functions: an import of one of mlc's own modules belongs in the module's
top-level import block, so that the dependency graph between mlc's modules is visible there; one is
inside a function only to defer a heavy module (torch, MLflow, Optuna, timm, ...) or to keep a light
module light (the ``mlc`` dispatcher, ``mlc.cli.clean``, ``--help`` paths, the sweeper plugin Hydra
imports in every run), and then says why: ``# deferred: <why>`` on its (first) line or the line above."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("mlc", "hydra_plugins/mlc_sweepers")
REASON = re.compile(r"# deferred: \S")  # the comment, with its reason


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The modules an import statement names (a relative one resolved against ``package``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        return [".".join([*base, *([node.module] if node.module else [])])]
    return [node.module or ""]


def undeferred(source: str, package: str = "mlc") -> list[int]:
    """Lines of the imports of mlc modules inside a function of ``source`` that carry no ``# deferred: <why>``
    comment on their (first) line or on the line directly above."""
    lines = source.splitlines()
    found: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)) and any(
                    name == "mlc" or name.startswith("mlc.") for name in _imported(child, package)):
                line, above = lines[child.lineno - 1], lines[child.lineno - 2] if child.lineno > 1 else ""
                if not REASON.search(line) and not REASON.match(above.strip()):
                    found.append(child.lineno)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return found


def test_imports_of_mlc_modules_inside_functions_say_why_they_are_deferred():
    files = sorted(path for folder in SOURCES for path in (ROOT / folder).rglob("*.py"))
    assert files
    offenders = []
    for path in files:
        package = ".".join(path.relative_to(ROOT).parent.parts)
        offenders += [f"{path.relative_to(ROOT)}:{line}" for line in undeferred(path.read_text(), package)]
    assert not offenders, ("imports of mlc modules inside functions without a `# deferred: <why>` comment (hoist "
                           "them to the top of the module, or say why they wait):\n" + "\n".join(offenders))


def test_the_checker_finds_an_import_that_does_not_say_why():
    source = "\n".join([
        "from mlc.errors import MlcError",  # 1: top level: not the rule's business
        "",
        "def f():",
        "    import json",  # 4: not an mlc module
        "    from mlc.config import compose_config",  # 5: offender
        "    from mlc.sweep.study import open_storage  # deferred: loads Optuna",  # 6
        "    # deferred: loads torch",
        "    from mlc.engine import (",  # 8: the comment on the line above
        "        checkpoint,",
        "    )",
        "    if True:",
        "        import mlc.tracking",  # 12: offender, nested in a block
        "        from . import stores",  # 13: offender, relative (mlc.stores)
        "        from mlc.flat import flatten  # deferred:",  # 14: offender: a comment without its reason
        "",
        "class C:",
        "    def m(self):",
        "        from mlc.metrics import average_precisions  # unrelated comment",  # 18: offender
    ])
    assert undeferred(source, package="mlc") == [5, 12, 13, 14, 18]
