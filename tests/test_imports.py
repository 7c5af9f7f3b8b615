"""The modules import one way only: no circle, lazy imports inside functions included, and no
script is imported by a module (LAYOUT: scripts -> concerns -> formats)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"DataPrepare", "model", "evaluate", "baselines", "benchmark", "reproduce"}


def project_imports():
    """{module: set of project modules it imports anywhere in its body}."""
    names = {f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")}
    graph = {}
    for name in names:
        tree = ast.parse(open(os.path.join(ROOT, name + ".py")).read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
        graph[name] = (found & names) - {name}
    return graph


def find_cycle(graph):
    state, path = {}, []

    def visit(n):
        state[n] = "open"
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return path[path.index(m):] + [m]
            if m not in state:
                cycle = visit(m)
                if cycle:
                    return cycle
        state[n] = "done"
        path.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = visit(n)
            if cycle:
                return cycle
    return None


def test_no_import_circle_between_modules():
    graph = project_imports()
    assert {"training", "fastpath", "rotations", "network"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_imports_a_script():
    graph = project_imports()
    offenders = {m: sorted(graph[m] & SCRIPTS) for m in graph if m not in SCRIPTS and graph[m] & SCRIPTS}
    assert not offenders, offenders


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
