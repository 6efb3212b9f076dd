"""`saga ui` as a command: where it listens, what it says, the token, and its one-line errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
from conftest import SagaCli, cli_env, saga_executable
from support import assert_one_line_error, wait_for

from .dashboard import Dashboard, start_dashboard


def test_a_taken_port_is_one_error_line(migrated: SagaCli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = migrated("ui", "--port", str(port))

    assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}")


def test_a_host_that_does_not_resolve_is_one_error_line(migrated: SagaCli) -> None:
    result = migrated("ui", "--host", "no-such-host.invalid", "--port", "0")

    assert_one_line_error(result, 1, "cannot listen on no-such-host.invalid:0")


def test_a_token_too_short_to_resist_guessing_is_refused(migrated: SagaCli) -> None:
    result = migrated("ui", "--allow-actions", "--port", "0", SAGA_UI_TOKEN="short")

    assert_one_line_error(result, 2, "SAGA_UI_TOKEN must be at least 16 characters long")


def test_services_without_actions_is_refused(migrated: SagaCli) -> None:
    result = migrated("ui", "--port", "0", "--services", "http://127.0.0.1:1")

    assert_one_line_error(result, 2, "--services", "--allow-actions")


def test_without_a_token_one_is_generated_printed_and_signs_in(migrated: SagaCli) -> None:
    env = {k: v for k, v in cli_env().items() if k != "SAGA_UI_TOKEN"}
    process = subprocess.Popen(
        [saga_executable(), "--db", str(migrated.db), "ui", "--port", "0", "--allow-actions"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        said = [process.stderr.readline(), process.stderr.readline()]
        url = re.search(r"saga ui on (http://\S+/) \(actions allowed", said[0])
        token = re.search(r"^actions token: (\S+)  \(sign in at (http://\S+/login)\)$", said[1])
        assert url and token, said
        assert token.group(2) == url.group(1) + "login"
        wrong = httpx.post(url.group(1) + "login", data={"token": "x" * 32})
        right = httpx.post(url.group(1) + "login", data={"token": token.group(1)})
        assert wrong.status_code == 403
        assert right.status_code == 303 and right.headers["location"] == "/executions"
        assert "httponly" in right.headers["set-cookie"].lower()
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0  # a stop is the normal end


def test_a_given_token_is_not_printed(migrated: SagaCli) -> None:
    served = start_dashboard(str(migrated.db), "--allow-actions", SAGA_UI_TOKEN="z" * 24)
    try:
        assert "token" not in "".join(served.stderr)
        assert served.get("/login").status_code == 200
    finally:
        served.stop()


def test_loopback_is_the_default_and_another_address_is_warned_about(migrated: SagaCli) -> None:
    quiet = start_dashboard(str(migrated.db))
    loud = start_dashboard(str(migrated.db), "--host", "0.0.0.0")
    try:
        assert quiet.url.startswith("http://127.0.0.1:")
        assert "warning" not in "".join(quiet.stderr)
        warning = next(line for line in loud.stderr if line.startswith("warning:"))
        assert warning.strip() == (
            f"warning: not listening on loopback: anyone who reaches {loud.url} can read the "
            "saga log"
        )
        # Bound to every address it cannot know its own names, so it serves any Host.
        assert loud.get("/executions", headers={"Host": "dashboard.example"}).status_code == 200
    finally:
        quiet.stop()
        loud.stop()


def test_ctrl_c_stops_it_with_exit_code_0(migrated: SagaCli) -> None:
    served = start_dashboard(str(migrated.db))
    served.process.send_signal(signal.SIGINT)

    assert served.process.wait(timeout=20) == 0
    assert "Traceback" not in "".join(served.stderr)


def test_a_log_that_is_not_a_saga_log_is_one_error_line(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("not a database at all, just some words" * 20)

    result = SagaCli(other)("ui", "--port", "0")

    assert result.code == 2, result
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1


def test_it_serves_a_log_another_process_is_writing(migrated: SagaCli) -> None:
    served: Dashboard = start_dashboard(str(migrated.db))
    try:
        booked = migrated("book", "--flight", "FL100", "--hotel", "GRAND", "--json").json()["id"]
        wait_for(lambda: booked in served.get("/executions").text, "the new booking on the page")
        assert served.get(f"/executions/{booked[:8]}").status_code == 200  # a prefix is enough
    finally:
        served.stop()
    assert os.path.exists(migrated.db)
