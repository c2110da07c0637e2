"""Audit: the tools' SQL is fixed text; every value reaches SQLite as a bound parameter.

A statement may be a string literal, a module constant, an f-string built only from module
constants, or a loop variable over a constant tuple. Anything else (a value formatted into
SQL) fails here, naming the file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.procs import ROOT

CONSTANT = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
SQL_METHODS = {"execute", "executemany", "executescript"}
AUDITED = sorted((ROOT / "mesh" / "tools").glob("*.py"))


def _constant_loop_vars(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.For)
            and isinstance(node.iter, ast.Name)
            and CONSTANT.match(node.iter.id)
            and isinstance(node.target, ast.Name)
        ):
            names.add(node.target.id)
    return names


def _fixed(arg: ast.expr, loop_vars: set[str]) -> bool:
    if isinstance(arg, ast.Constant):
        return isinstance(arg.value, str)
    if isinstance(arg, ast.Name):
        return bool(CONSTANT.match(arg.id)) or arg.id in loop_vars
    if isinstance(arg, ast.JoinedStr):
        return all(
            isinstance(v, ast.Constant)
            or (
                isinstance(v, ast.FormattedValue)
                and isinstance(v.value, ast.Name)
                and CONSTANT.match(v.value.id)
            )
            for v in arg.values
        )
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add):
        return _fixed(arg.left, loop_vars) and _fixed(arg.right, loop_vars)
    return False


def sql_calls(path: Path) -> list[tuple[int, bool]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    loop_vars = _constant_loop_vars(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_METHODS
            and node.args
            and not (isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "inner")
        ):
            found.append((node.lineno, _fixed(node.args[0], loop_vars)))
    return found


@pytest.mark.parametrize("path", AUDITED, ids=lambda p: p.name)
def test_tool_sql_is_fixed_text(path: Path) -> None:
    dynamic = [line for line, fixed in sql_calls(path) if not fixed]
    assert not dynamic, (
        f"{path.name}: SQL built from runtime values at lines {dynamic}; bind them as parameters"
    )


def test_the_audit_sees_the_order_database_statements() -> None:
    assert len(sql_calls(ROOT / "mesh" / "tools" / "orders.py")) >= 15


def test_the_audit_catches_formatted_sql(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        'def f(conn, order_id):\n    conn.execute(f"SELECT * FROM orders WHERE id = '
        "'{order_id}'\")\n"
        "    conn.execute('SELECT 1 WHERE x = ' + order_id)\n    conn.execute('SELECT ?', "
        "(order_id,))\n"
    )
    assert sql_calls(bad) == [(2, False), (3, False), (4, True)]
