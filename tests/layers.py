"""The house's import rules, checked on source (every import, inside functions too).

Layers, top to bottom; a module may import its own layer and the ones below:
    cli      devswarm.cli, devswarm.commands.*      the command line
    flows    flows.*                                Prefect flows
    tasks    tasks.*                                Prefect tasks and the Prefect plumbing around them
    blocks   blocks.*                               Prefect blocks
    core     every other devswarm.* module          plain Python: never imports prefect
and no two modules import each other, directly or round a loop (imports only a type checker
reads, under `if TYPE_CHECKING:`, do not count).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("devswarm", "flows", "tasks", "blocks")
RANKS = {"core": 0, "blocks": 1, "tasks": 2, "flows": 3, "cli": 4}


def layer(module: str) -> str:
    top = module.split(".")[0]
    if module == "devswarm.cli" or module.startswith("devswarm.commands"):
        return "cli"
    return top if top in ("flows", "tasks", "blocks") else "core"


def modules(root: Path) -> dict[str, Path]:
    """Our modules under `root`: dotted name -> file."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, outside TYPE_CHECKING blocks.
    `from a import b` names a.b when that is one of `known` modules, else a."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.append((sub if sub in known else node.module, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def violations(root: Path) -> list[str]:
    """Every broken rule under `root`, one line each (empty when the house is in order)."""
    mods = modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    problems = []
    for module, path in mods.items():
        where = path.relative_to(root)
        for target, line in imports(path, known):
            top = target.split(".")[0]
            if layer(module) == "core" and top == "prefect":
                problems.append(f"{where}:{line}: the core imports {target}")
            if top not in PACKAGES:
                continue
            owner = target
            while owner not in known and "." in owner:
                owner = owner.rsplit(".", 1)[0]
            if owner not in known or owner == module:
                continue
            graph[module].add(owner)
            if RANKS[layer(owner)] > RANKS[layer(module)]:
                problems.append(
                    f"{where}:{line}: {layer(module)} module {module} imports "
                    f"{layer(owner)} module {owner} (arrows point down)"
                )
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop for each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
                groups.append(sorted(group) + [sorted(group)[0]])

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return groups
