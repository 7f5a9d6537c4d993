"""The package keeps its own conventions (the project rules): no function over 80 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nforge_jax"
MAX_FUNCTION_LINES = 80


def long_functions(root: Path, limit: int) -> list[str]:
    """'path:line name (N lines)' for every function or method (nested ones included) longer than ``limit``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_is_longer_than_80_lines():
    assert long_functions(PACKAGE, MAX_FUNCTION_LINES) == []


def test_the_length_check_sees_long_and_nested_functions(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f"def short():\n    return 1\n\n\nclass C:\n    def outer(self):\n"
                                           f"        def inner():\n{body.replace('    ', '            ')}\n"
                                           f"        return inner\n")
    assert long_functions(tmp_path / "pkg", MAX_FUNCTION_LINES) == ["pkg/m.py:6 outer (83 lines)",
                                                                    "pkg/m.py:7 inner (81 lines)"]


def test_no_two_test_modules_share_a_name():
    # the test folders are not packages: pytest imports each module by its bare name, and a second module of that
    # name fails collection with "import file mismatch" (in a fresh clone, where no cache hides it)
    tests = Path(__file__).resolve().parent
    by_name: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        if not (path.parent / "__init__.py").exists():
            by_name.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
