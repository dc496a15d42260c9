"""The layering of docs/architecture.md holds: every import under src/stabletune (lazy ones included) goes from a
unit to a unit its row allows. The document's table is the one statement of the rule; this test reads it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "stabletune"


def allowed() -> dict[str, set[str]]:
    rows = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        m = re.match(r"\|\s*\d+\s*\|\s*`([^`]+)`\s*\|[^|]*\|([^|]*)\|\s*$", line)
        if m:
            rows[m.group(1)] = {u.strip() for u in m.group(2).split(",") if u.strip() not in ("", "—")}
    return rows


def unit_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports() -> dict[tuple[str, str], list[str]]:
    """(importer unit, imported unit) -> where (file:line)."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        unit = unit_of(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("stabletune."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("stabletune.")]
            for name in names:
                target = name.split(".")[1]
                if target != unit:
                    out.setdefault((unit, target), []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


def test_every_unit_is_in_the_table():
    table = allowed()
    units = {unit_of(p) for p in SRC.rglob("*.py")}
    assert units == set(table), (sorted(units - set(table)), sorted(set(table) - units))


def test_imports_follow_the_layers():
    table = allowed()
    wrong = [f"{a} -> {b} ({', '.join(where[:3])})" for (a, b), where in imports().items() if b not in table[a]]
    assert not wrong, "imports the layering does not allow (docs/architecture.md):\n" + "\n".join(wrong)


def test_the_library_never_imports_its_command_line():
    below = [f"{a}: {where[0]}" for (a, b), where in imports().items() if b == "cli" and a != "__main__"]
    assert below == []
