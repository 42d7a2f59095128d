"""The import graph of the genlab package: modules, imports between them (module-level and inside functions
alike), the imports that run up the layers, and the loops between packages.

    python scripts/import_graph.py            # this checkout
    python scripts/import_graph.py --root DIR # another checkout (e.g. a git worktree of an older commit)

A package is a subpackage (genlab.models) or a top-level module (genlab.run). Layers, from the bottom: a
package may import only from its own layer or below. The layer of a package is given by LAYERS; a package
that is not listed is reported, so a new package is placed on purpose.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

LAYERS = [
    ["errors", "files", "draws", "signals"],  # no genlab imports beyond these
    ["safety", "runfolder", "runs"],  # run folders as files
    ["config"],  # schemas and checks (no torch)
    ["data", "figures", "capabilities", "checkpoints", "report", "sweep"],
    ["nets"],
    ["models"],
    ["metrics"],
    ["callbacks"],
    ["run"],
    ["train", "evaluate", "sample", "entry"],  # the commands
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def package_of(module: str) -> str:
    """genlab.models.vae -> models; genlab.run -> run; genlab -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(root: Path) -> dict[str, set[str]]:
    """Each genlab module (dotted name) -> the genlab modules it imports anywhere in its text."""
    out: dict[str, set[str]] = {}
    for path in sorted((root / "genlab").rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("genlab")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genlab") \
                    and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names
                          if (root / Path(*node.module.split("."), a.name)).with_suffix(".py").is_file()}
        out[name] = {m for m in found if m != name}
    return out


def package_loops(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected sets of two or more packages (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                loops.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return loops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    graph = imports(args.root)
    pairs = [(a, b) for a, targets in graph.items() for b in sorted(targets)]
    packages = {(package_of(a), package_of(b)) for a, b in pairs if package_of(a) != package_of(b)}
    packages = {(a, b) for a, b in packages if a and b}
    unplaced = sorted({p for pair in packages for p in pair if p not in LAYER})
    up = sorted((a, b) for a, b in pairs if package_of(a) in LAYER and package_of(b) in LAYER
                and LAYER[package_of(b)] > LAYER[package_of(a)])
    loops = package_loops(packages)
    print(f"modules {len(graph)}, packages {len({package_of(m) for m in graph} - {''})}, layers {len(LAYERS)}, "
          f"imports between modules {len(pairs)}, between packages {len(packages)}")
    print(f"imports up the layers: {len(up)}" + "".join(f"\n  {a} -> {b}" for a, b in up))
    print(f"loops between packages: {len(loops)}" + "".join(f"\n  {' <-> '.join(g)}" for g in loops))
    if unplaced:
        print(f"packages with no layer in LAYERS: {', '.join(unplaced)}")


if __name__ == "__main__":
    main()
