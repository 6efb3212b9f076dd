"""The README's fenced blocks, and what a console block says: commands, outputs, exit codes.

A fenced block runs in the README test when its language is ``console`` or
``python`` and the line before it is not ``<!-- readme-test: skip -->``.
In a console block a line starting with ``$ `` is a command (a quote left
open continues it on the next lines); the lines below it, up to the next
command, are what it prints. A ``...`` line stands for any lines.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

SKIP = "<!-- readme-test: skip -->"
# The block that follows runs with a driver of its own (it needs three terminals).
HTTP_DEMO = "<!-- readme-test: http-demo -->"
RUN = ("console", "python")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text, first line number and the marker before it."""

    language: str
    text: str
    line: int
    marker: str = ""

    @property
    def runs(self) -> bool:
        """Whether the README test runs this block."""
        return self.language in RUN and self.marker != SKIP


@dataclass
class Command:
    """One ``$ `` command of a console block, with the output the README shows for it."""

    text: str
    expected: list[str] = field(default_factory=list)

    @property
    def comment(self) -> str:
        """The trailing ``# ...`` comment, if any (what the README says will happen)."""
        try:
            lexer = shlex.shlex(self.text, posix=True, punctuation_chars=True)
            lexer.commenters = ""
            tokens = list(lexer)
        except ValueError:
            return ""
        return " ".join(tokens[tokens.index("#") + 1 :]) if "#" in tokens else ""

    @property
    def exit_code(self) -> int | None:
        """The exit code the comment states (``exit 3``), if it states one."""
        found = re.search(r"\bexit (\d+)\b", self.comment)
        return int(found.group(1)) if found else None


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order (indented ones too)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = re.match(r"^(\s*)```(\S*)\s*$", lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.groups()
        before = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(
                lines[index][len(indent) :] if lines[index].startswith(indent) else lines[index]
            )
            index += 1
        marker = before if before.startswith("<!-- readme-test") else ""
        blocks.append(Block(language, "\n".join(body), index - len(body), marker))
        index += 1
    return blocks


def _complete(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def commands(block: Block) -> list[Command]:
    """The commands of a console block, each with its expected output lines."""
    found: list[Command] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("$ "):
            text = line[2:]
            while not _complete(text) and index < len(lines):
                text += "\n" + lines[index]
                index += 1
            found.append(Command(text))
        elif found:
            found[-1].expected.append(line)
        elif line.strip():
            raise ValueError(f"README line {block.line}: output before any command: {line!r}")
    return found
