"""The import graph of src/convstudy, read from the source (an AST walk): no import circles between modules,
and no module imports from a stage to its right (docs/architecture.md):

    data → spec → keras → model → train → store → report → deploy → measure → executors, search → api, results → cli

`convstudy.errors` and `convstudy.untrusted` are shared leaves every stage may import. The root package
(`convstudy/__init__.py`: the version, and `run`/`load`, which reach convstudy.api only when called) counts
as a leaf too. Imports under `if TYPE_CHECKING:` are annotations, not imports, and are left out; imports
inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import convstudy

SRC = Path(convstudy.__file__).parent
STAGES = ["data", "spec", "keras", "model", "train", "store", "report", "deploy", "measure", ("executors", "search"),
          ("api", "results"), ("cli", "__main__")]
RANK = {room: i for i, stage in enumerate(STAGES) for room in ((stage,) if isinstance(stage, str) else stage)}
LEAVES = {"convstudy", "convstudy.errors", "convstudy.untrusted"}
# (importer, imported) edges allowed against the rules, each with its reason. Keep it empty.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _owner(name: str) -> str:
    """The module `name` lives in (an imported name `convstudy.store.State` is convstudy.store's)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(module: str) -> set[str]:
    """The convstudy modules `module` imports at run time (anywhere in the file, not under TYPE_CHECKING)."""
    tree = ast.parse(MODULES[module].read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {_owner(a.name) for a in node.names if a.name.split(".")[0] == "convstudy"}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import"
            if node.module.split(".")[0] == "convstudy":
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else _owner(node.module)
                          for a in node.names}
    return found - {module}


GRAPH = {m: set() if m == "convstudy" else imports(m) for m in MODULES}  # the root: see the docstring


def room(module: str) -> str:
    return module.split(".")[1]


def test_every_module_has_a_stage():
    assert {room(m) for m in MODULES if m not in LEAVES} <= set(RANK)


def test_no_module_imports_from_a_stage_to_its_right():
    bad = []
    for module, targets in GRAPH.items():
        for target in sorted(targets):
            if (module, target) in ALLOWED:
                continue
            if module in LEAVES and target not in LEAVES:
                bad.append(f"{module} (a shared leaf) imports {target}")
            elif target not in LEAVES and module not in LEAVES and RANK[room(target)] > RANK[room(module)]:
                bad.append(f"{module} ({room(module)}) imports {target} ({room(target)})")
    assert not bad, "\n".join(bad)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_circles():
    graph = {m: {t for t in targets if (m, t) not in ALLOWED} for m, targets in GRAPH.items()}
    assert _circles(graph) == []


def test_the_check_finds_a_circle_and_an_upward_import():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert RANK["store"] > RANK["train"] and RANK["cli"] > RANK["api"] > RANK["executors"] > RANK["report"]


@pytest.mark.parametrize("module", ["convstudy.report.collect", "convstudy.report.stats", "convstudy.report.models"])
def test_report_data_modules_import_no_html(module):
    # The JSON report's numbers are gathered without any HTML module; the page renders them.
    assert not {t for t in GRAPH[module] if room(t) == "report" and t.split(".")[-1].startswith("html")}


def test_no_package_is_named_like_a_script_folder():
    # bench/, scripts/ and examples/ are the repository's folders of scripts; a package of the same name
    # (src/convstudy/bench once) made "bench" mean two things.
    assert not {room(m) for m in MODULES if m not in LEAVES} & {"bench", "scripts", "examples"}
