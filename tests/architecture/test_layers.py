"""The package's layering, checked: the protocol imports no PySyft, and no import cycles.

``fedmugrep.federation`` is the runtime-independent protocol (plan, artefacts, releasing
parties, coordinator, wire format, the local runtime); ``fedmugrep.pysyft`` puts it on PySyft
datasites. The import graph below counts every import of a fedmugrep module, also those inside
functions (a deferred import can hide a cycle as well as a top-level one).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fedmugrep

PACKAGE = Path(fedmugrep.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> fedmugrep modules it imports`` (module level and inside functions)."""
    modules = _modules()

    def resolve(target: str) -> str:
        while target and target not in modules:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fedmugrep"):
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("fedmugrep")]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found and found != name:
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_protocol_never_imports_the_pysyft_adapter() -> None:
    graph = import_graph()
    protocol = [m for m in graph if m.startswith("fedmugrep.federation")]
    assert "fedmugrep.federation.parties" in protocol
    leaks = {m: sorted(t for t in graph[m] if t.startswith("fedmugrep.pysyft")) for m in protocol}
    assert {m: t for m, t in leaks.items() if t} == {}


def test_importing_the_whole_protocol_loads_no_syft() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import fedmugrep.federation as f\n"
        "for m in pkgutil.walk_packages(f.__path__, 'fedmugrep.federation.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k == 'syft' or k.startswith(('syft.', "
        "'fedmugrep.pysyft')))\n"
        "print(len(list(pkgutil.walk_packages(f.__path__))), bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert int(out[0]) >= 10  # the protocol's modules were all imported
    assert out[1:] == ["[]"]


def test_the_cli_help_loads_neither_torch_nor_syft() -> None:
    """``fedmugrep --help`` and every light command's help stay fast: nothing on the way to the
    argument parser imports torch, PyTorch Geometric, syft, Opacus or scikit-learn (the packages
    load names lazily; scikit-learn alone costs ~0.6 s)."""
    code = (
        "import sys, contextlib, io\n"
        "from fedmugrep.cli import main\n"
        "for argv in (['--help'], ['audit', '--help'], ['budget', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = ('torch', 'torch_geometric', 'syft', 'opacus', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout.strip()
    assert out == "[]"


def function_level_imports() -> list[tuple[str, int, str, bool]]:
    """``(file, line, module, commented)`` for every import inside a function."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    line = lines[node.lineno - 1]
                    above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                    commented = "#" in line or above.startswith("#")
                    rel = str(path.relative_to(PACKAGE.parent))
                    found.append((rel, node.lineno, str(module), commented))
    return found


def test_every_import_inside_a_function_says_why() -> None:
    """Imports inside functions are deliberate (a heavy dependency deferred, or a function
    PySyft ships to a datasite as source) and say so on their line."""
    found = function_level_imports()
    assert len(found) > 20  # the scan sees them
    assert [f for f in found if not f[3]] == []


def test_stopping_and_inspecting_a_datasite_loads_neither_torch_nor_syft(tmp_path: Path) -> None:
    """``datasite stop`` and ``datasite status`` read a pid file and signal a process: an owner
    runs them often, and they start in well under a second (no torch, no syft)."""
    toml = tmp_path / "site.toml"
    toml.write_text(
        '[datasite]\nname = "a"\nhome = "home"\nport = 8081\nrole = "transactions"\n'
        '[admin]\nemail = "o@a.example"\n[data]\ntransactions = "t.csv"\n',
        encoding="utf-8",
    )
    code = (
        "import sys, contextlib, io\n"
        "from fedmugrep.cli import main\n"
        f"for argv in (['datasite', 'stop', '--config', {str(toml)!r}],\n"
        f"             ['datasite', 'status', '--config', {str(toml)!r}]):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        rc = main(argv)\n"
        "    assert 'not running' in out.getvalue(), out.getvalue()\n"
        "heavy = ('torch', 'torch_geometric', 'syft', 'opacus', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
