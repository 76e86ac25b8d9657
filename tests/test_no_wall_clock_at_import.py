"""No wall-clock time is read at import or collection (issue 7 part 1).

``NOW = datetime.now()`` at module level is read when pytest imports the module,
which on a loaded machine can be minutes before the test runs and makes the
server's CA. The card's clock was then frozen before the CA existed, so it
refused the CA as not yet valid (6984 DATA_INVALID) only when the suite was slow.

This scans every module in src/, tests/ and bench/ for clock reads in code that
runs at import: module and class bodies, decorators (``parametrize`` values) and
default arguments. Function bodies, lambdas and ``if __name__ == "__main__":``
blocks run later and are not scanned.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("src", "tests", "bench")

#: ``x.now()``, ``datetime.utcnow()``, ``date.today()`` on any object.
CLOCK_METHODS = {"now", "utcnow", "today"}
#: ``time.time()`` and friends, on the ``time`` module.
TIME_FUNCTIONS = {
    "time",
    "time_ns",
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
}
#: Bare calls after ``from time import time`` or of hatchway's own clock.
CLOCK_NAMES = (TIME_FUNCTIONS - {"time"}) | {"system_clock"}


def _is_clock_call(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Attribute):
        if func.attr in CLOCK_METHODS:
            return True
        base = func.value
        return func.attr in TIME_FUNCTIONS and isinstance(base, ast.Name) and base.id == "time"
    return isinstance(func, ast.Name) and func.id in CLOCK_NAMES | {"time"}


def _is_main_guard(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node evaluated when ``body`` (a module or class body) runs."""
    for stmt in body:
        if _is_main_guard(stmt):
            continue
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            args = stmt.args
            yield from stmt.decorator_list
            yield from args.defaults
            yield from (d for d in args.kw_defaults if d is not None)
        elif isinstance(stmt, ast.ClassDef):
            yield from stmt.decorator_list
            yield from stmt.bases
            yield from stmt.keywords
            yield from _import_time_nodes(stmt.body)
        else:
            yield stmt


def _calls_run_at_import(node: ast.AST) -> Iterator[ast.Call]:
    """Calls in ``node``, not descending into lambdas or nested functions."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(current, ast.Call) and _is_clock_call(current):
            yield current
        if isinstance(current, ast.ClassDef | ast.If | ast.Try | ast.With):
            # A nested block at module level still runs at import.
            for name in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(current, name, None)
                if block and isinstance(block[0], ast.stmt):
                    stack.extend(_import_time_nodes(block))
            children = [
                c
                for c in ast.iter_child_nodes(current)
                if not isinstance(c, ast.stmt | ast.excepthandler)
            ]
            stack.extend(children)
            continue
        stack.extend(ast.iter_child_nodes(current))


def clock_reads_at_import(source: str, filename: str) -> list[str]:
    tree = ast.parse(source, filename)
    found = []
    for node in _import_time_nodes(tree.body):
        for call in _calls_run_at_import(node):
            found.append(f"{filename}:{call.lineno}: {ast.unparse(call)}")
    return sorted(set(found))


def _python_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))


def test_no_module_reads_the_clock_at_import() -> None:
    files = _python_files()
    assert len(files) > 100  # the scan really ran over the tree
    found = [
        hit
        for path in files
        for hit in clock_reads_at_import(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == [], "read the clock when used, not at import:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import datetime as dt\nNOW = dt.datetime.now(dt.UTC).timestamp()",
        "from datetime import datetime\nSTART = datetime.utcnow()",
        "import time\nT0 = int(time.time())",
        "from time import monotonic\nT0 = monotonic()",
        "import time\ndef f(now=time.time()): ...",
        "import time\ndef f(*, now=time.monotonic()): ...",
        "import pytest, time\n@pytest.mark.parametrize('t', [time.time()])\ndef test(t): ...",
        "import datetime\nclass C:\n    START = datetime.date.today()",
        "import time\nif True:\n    T0 = time.perf_counter()",
        "import time\nVALUES = [t for t in (time.time(),)]",
        "from hatchway.runtime import system_clock\nNOW = system_clock()",
    ],
)
def test_the_scan_finds_each_kind_of_import_time_read(source: str) -> None:
    assert clock_reads_at_import(source, "m.py")


@pytest.mark.parametrize(
    "source",
    [
        "import time\ndef f():\n    return time.time()",
        "import time\nclock = lambda: time.time()",
        "import time\nclass C:\n    def f(self):\n        return time.monotonic()",
        "import time\nif __name__ == '__main__':\n    print(time.time())",
        "import datetime as dt\nSTART = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)",
        "from hatchway.runtime import system_clock\ndef f(clock=system_clock): ...",
    ],
)
def test_the_scan_allows_reads_that_happen_later(source: str) -> None:
    assert clock_reads_at_import(source, "m.py") == []
