"""`saga watch` on a pseudo-terminal: it redraws from the log, and Ctrl-C leaves it cleanly."""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from pathlib import Path

from conftest import SagaCli, cli_env, saga_executable
from support import BOOKING, insert_execution

HEADER = "Executions in flight"


class Terminal:
    """`saga watch` running on the child side of a pseudo-terminal."""

    def __init__(self, db: Path, *args: str) -> None:
        env = cli_env(TERM="xterm-256color", COLUMNS="160", LINES="40")
        argv = [saga_executable(), "--db", str(db), "watch", *args]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become `saga watch`
            os.execve(argv[0], argv, env)
        self.output = ""

    def read_until(self, predicate: object, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(predicate) and predicate(self.output):
                return self.output
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                self.output += chunk.decode("utf-8", "replace")
        return self.output

    def finish(self, timeout: float = 10) -> int:
        """Read to the end and reap the child; returns its exit code."""
        self.read_until(lambda _text: False, timeout=timeout)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_watch_redraws_from_the_log_and_leaves_on_ctrl_c(migrated: SagaCli) -> None:
    stalled = insert_execution(
        migrated.db, "running", time.time() - 5, owner="gone:1:1", lease_expires_at=1.0
    )
    term = Terminal(migrated.db, "--interval", "0.2")
    try:
        term.read_until(lambda out: out.count(HEADER) >= 3)
        assert term.output.count(HEADER) >= 3, term.output
        assert stalled[:12] in term.output
        assert "(interrupted)" in term.output
        # Another process writes to the log: the next refreshes count it.
        booked = migrated("book", *BOOKING, "--json")
        assert booked.code == 0, booked
        term.read_until(lambda out: "completed 1" in out)
        assert "completed 1" in term.output
        os.kill(term.pid, signal.SIGINT)
        code = term.finish()
    finally:
        try:
            os.kill(term.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert code == 0, term.output
    assert "Traceback" not in term.output
    assert "Error" not in term.output


def test_watch_count_stops_by_itself_without_a_terminal(migrated: SagaCli) -> None:
    insert_execution(migrated.db, "pending", time.time())

    result = migrated("watch", "--count", "2", "--interval", "0.1")

    assert result.code == 0, result
    assert HEADER in result.stdout
    assert "pending" in result.stdout
    assert result.stderr == ""


def test_watch_refuses_a_bad_window(migrated: SagaCli) -> None:
    result = migrated("watch", "--window", "soon", "--count", "1")

    assert result.code == 2
    assert result.stderr.startswith("Error: ")
