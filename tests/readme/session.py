"""Running the README's blocks as a reader would: one directory, one shell at a time, in order.

Outputs are compared line by line after masking what changes from run to run
(ids, times, durations, pids, ports); each line the README shows must appear,
in order, in what the command printed (a ``...`` line, a table's borders and
blank lines match anything). An id the README shows is mapped to the id the
run printed at the same place, so a later ``saga resume f2bb`` resumes the
run's execution.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from readme.blocks import Block, Command, commands

BIN = Path(sys.executable).parent  # the venv's bin: `saga` and `python` as installed
HEX_ID = re.compile(r"\b[0-9a-f]{8,32}\b")
MASKS = (
    (HEX_ID, "<ID>"),
    (re.compile(r"TRK-[0-9A-F]{10}"), "TRK-<ID>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?"), "<TIME>"),
    (re.compile(r"\d+(\.\d+)?\s?(ms|s)\b"), "<DURATION>"),
    (re.compile(r"\bpid \d+"), "pid <PID>"),
    (re.compile(r"\b127\.0\.0\.1:\d+"), "127.0.0.1:<PORT>"),
)
BORDER = re.compile(r"^[\s─━┏┓┗┛┃│┡┩└┘┳┻╇┴┬├┤┼═║╔╗╚╝]*$")


def masked(line: str) -> str:
    """`line` with what varies between runs masked and its spaces collapsed."""
    for pattern, mask in MASKS:
        line = pattern.sub(mask, line)
    return " ".join(line.split())


@dataclass
class Ran:
    """What one command did."""

    command: str
    code: int
    output: str

    def __str__(self) -> str:
        return f"$ {self.command}\n(exit {self.code})\n{self.output}"


@dataclass
class Session:
    """A reader's terminal: a directory, an environment, and the ids seen so far."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    last_code: int = 0

    @classmethod
    def fresh(cls, cwd: Path) -> Session:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
        env.update(
            {
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                "COLUMNS": "200",
                "NO_COLOR": "1",
                "TERM": "dumb",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("VIRTUAL_ENV", None)
        return cls(cwd, env)

    # -- ids -------------------------------------------------------------------------

    def substitute(self, command: str) -> str:
        """`command` with each id (or id prefix) the README showed replaced by the run's."""

        def swap(match: re.Match[str]) -> str:
            token = match.group(0)
            for shown, actual in self.ids.items():
                if shown.startswith(token) and len(actual) >= len(token):
                    return actual[: len(token)]
            return token

        return re.sub(r"(?<![\w/.-])[0-9a-f]{4,32}\b", swap, command)

    def learn(self, shown: str, printed: str) -> None:
        """Map the ids of a README line onto those of the line the run printed there."""
        ours, theirs = HEX_ID.findall(shown), HEX_ID.findall(printed)
        if len(ours) == len(theirs):
            for a, b in zip(ours, theirs, strict=True):
                if len(a) == len(b):
                    self.ids.setdefault(a, b)

    # -- running ---------------------------------------------------------------------

    def run(self, command: str, timeout: float = 120) -> Ran:
        """Run one command line in bash, stdout and stderr together."""
        if command.strip() == "echo $?":
            return Ran(command, 0, f"{self.last_code}\n")
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        code = 128 - done.returncode if done.returncode < 0 else done.returncode
        self.last_code = code
        return Ran(command, code, done.stdout)

    def compare(self, shown: list[str], ran: Ran) -> None:
        """Fail unless every line the README shows appears, in order, in what ran printed."""
        printed = ran.output.splitlines()
        at = 0
        for line in shown:
            line = self.substitute(line)  # a short id prefix the README showed earlier
            want = masked(line)
            if not want or want == "..." or BORDER.match(line):
                continue
            for index in range(at, len(printed)):
                if masked(printed[index]) == want:
                    self.learn(line, printed[index])
                    at = index + 1
                    break
            else:
                raise AssertionError(
                    f"the README shows {line!r}, which this run did not print (after line "
                    f"{at}):\n{ran}"
                )

    def console(self, block: Block) -> None:
        """Run a console block's commands in order, checking outputs and exit codes."""
        steps = commands(block)
        for index, step in enumerate(steps):
            ran = self.run(self.substitute(step.text))
            shown = list(step.expected)
            followed_by_code = index + 1 < len(steps) and steps[index + 1].text == "echo $?"
            if "Killed" in (line.strip() for line in shown):
                shown = [line for line in shown if line.strip() != "Killed"]
                assert ran.code == 128 + 9, f"README line {block.line}: not killed\n{ran}"
            elif not followed_by_code and ran.command != "echo $?":
                expected = step.exit_code or 0
                assert ran.code == expected, f"README line {block.line}: exit {expected}?\n{ran}"
            self.compare(shown, ran)

    def python(self, block: Block, name: str) -> None:
        """Run a Python block as a script of its own in the directory."""
        script = self.cwd / name
        script.write_text(block.text + "\n", encoding="utf-8")
        ran = self.run(f"python {name}")
        assert ran.code == 0, f"README line {block.line}: the snippet failed\n{ran}"


def step_of(command: Command) -> str:
    """A command's text on one line (for messages)."""
    return " ".join(command.text.split())
