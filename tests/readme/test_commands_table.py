"""Every command and option that `--help` shows is in the README's Commands table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from saga_cli.cli import app
from saga_cli.faults import FAULT_OPTIONS, fault_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"
HIDDEN = {"--help"}


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def table_rows() -> list[str]:
    """The Commands table's rows: each one's first cell (the synopsis)."""
    rows = [line for line in section("Commands").splitlines() if line.startswith("| `saga")]
    return [row.split(" | ", 1)[0] for row in rows]


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every command of the CLI (click's, as Typer vendors it) with its path."""
    yield " ".join(path), group
    if hasattr(group, "commands"):
        for name, command in group.commands.items():
            if not getattr(command, "hidden", False):
                yield from commands(command, (*path, name))


def shown_options(command: Any) -> list[str]:
    """The options `--help` lists for `command`, each by its long name (or its only name)."""
    found = []
    for param in command.params:
        if param.param_type_name == "option" and not param.hidden:
            names = [n for n in (*param.opts, *param.secondary_opts) if n.startswith("--")]
            found += [n for n in names or param.opts if n not in HIDDEN]
    return found


def test_every_command_and_option_in_help_is_in_the_commands_table() -> None:
    rows = table_rows()
    faults = {fault.option.split()[0] for fault in FAULT_OPTIONS}
    missing = []
    for path, command in commands(typer.main.get_command(app)):
        synopsis = f"saga {path}".strip()
        mine = [r for r in rows if re.search(rf"`{re.escape(synopsis)}(?=[ `])", r)]
        if not mine:
            missing.append(f"command `{synopsis}`")
            continue
        text = " ".join(mine)
        for option in shown_options(command):
            if re.search(rf"{re.escape(option)}\b", text):
                continue
            if option in faults and "[FAULTS]" in text:
                continue
            missing.append(f"`{synopsis}` option {option}")
    assert not missing, "missing from the README's Commands table:\n" + "\n".join(missing)


def test_the_failure_injection_table_is_what_saga_faults_prints() -> None:
    assert fault_table_markdown() in section("Failure injection"), (
        "regenerate it from saga_cli.faults.fault_table_markdown()"
    )
