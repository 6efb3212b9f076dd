"""Delivering alerts from the log's outbox to sinks (a webhook, a command), at least once.

The engine writes an alert row in the same commit as the event behind it
(see :mod:`saga_cli.engine.alerting`); this module sends the rows. A
deliverer claims due alerts (which pushes their next attempt ahead: a lease,
so two processes do not send the same alert at once), sends each to every
sink that has not taken it yet, and records the result: delivered once all
sinks took it, else retried later with exponential backoff. A process that
dies mid-way leaves the alert due again when its lease runs out, so an
alert may reach a sink twice, always under the same ``Idempotency-Key``
(its id): a sink that honours it sees each alert once.

Long-running processes deliver in the background (:class:`Deliverer`, a
daemon thread: the engine never waits for a sink); ``saga alerts deliver``
does one pass, for cron.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from saga_cli.engine.alerting import DEFAULT_POLICY, AlertPolicy
from saga_cli.errors import InvalidInputError, LogUnavailableError, SagaError
from saga_cli.store import AlertRecord, SagaStore

log = logging.getLogger(__name__)

KEY_HEADER = "Idempotency-Key"
# A claimed alert is its deliverer's while every sink may take its time, and
# this much more; then another may take it (its deliverer died mid-way).
LEASE_MARGIN = 5.0
# Characters of a sink's error kept in the log, and of an alert's error sent.
ERROR_CHARS = 500
_WORDS = {
    "stuck": "is stuck and needs attention",
    "deadline": "missed its deadline and is being compensated",
    "compensation_failed": "has a compensation failing",
}


class DeliveryError(SagaError):
    """Raised when a sink did not take an alert (it is retried later)."""


class Sink(Protocol):
    """Where alerts go. `send` returns once the sink took the alert, or raises."""

    @property
    def name(self) -> str:
        """What the alert's delivery state calls this sink (keep it when editing the config)."""
        ...

    def send(self, message: Mapping[str, Any], key: str) -> None:
        """Deliver one alert message; `key` is its idempotency key.

        Raises:
            DeliveryError: the sink did not take it.
        """


@dataclass(frozen=True, slots=True)
class Webhook:
    """POSTs each alert as JSON to `url`, with its id in the ``Idempotency-Key`` header.

    The body has a Slack-compatible ``text`` field, so a Slack (or Mattermost,
    or Teams workflow) incoming webhook shows it as is. A 2xx answer is a
    delivery; anything else (or no answer within `timeout`) is retried.
    """

    name: str
    url: str
    timeout: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)

    def send(self, message: Mapping[str, Any], key: str) -> None:
        """POST `message` (see the class)."""
        import httpx

        # Errors name the status, never the URL: a webhook's URL is often its secret.
        try:
            response = httpx.post(
                self.url,
                json=message,
                headers={**self.headers, KEY_HEADER: key},
                timeout=self.timeout,
                trust_env=False,
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"answered {response.status_code}")


@dataclass(frozen=True, slots=True)
class Command:
    """Runs a shell command with each alert as JSON on its standard input.

    Exit status 0 is a delivery. The alert's id is also in the environment,
    as ``SAGA_ALERT_ID``, for commands that deduplicate.
    """

    name: str
    command: str
    timeout: float = 10.0

    def send(self, message: Mapping[str, Any], key: str) -> None:
        """Run the command (see the class)."""
        try:
            done = subprocess.run(  # noqa: S602 - an operator's own command line, from their config
                self.command,
                shell=True,
                input=json.dumps(message),
                text=True,
                capture_output=True,
                timeout=self.timeout,
                env={**os.environ, "SAGA_ALERT_ID": key},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeliveryError(f"took more than {self.timeout:g}s") from None
        except OSError as exc:
            raise DeliveryError(f"could not run: {exc}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout or "").strip().splitlines()
            tail = f": {said[-1][:200]}" if said else ""
            raise DeliveryError(f"exited with {done.returncode}{tail}")


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """When alerts are written, where they go, and how failed deliveries are retried.

    Args:
        policy: when the engine writes an alert (see AlertPolicy).
        sinks: where each alert is delivered; none leaves alerts pending in
            the log (``saga alerts --pending``) until some are configured.
        retry: seconds before the first retry of a failed delivery; each
            next one waits twice as long (with 20% jitter) ...
        retry_max: ... up to this.
    """

    policy: AlertPolicy = DEFAULT_POLICY
    sinks: tuple[Sink, ...] = ()
    retry: float = 5.0
    retry_max: float = 600.0

    def __post_init__(self) -> None:
        names = [sink.name for sink in self.sinks]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"alert sinks need distinct names (got {', '.join(names)})")
        if not 0 < self.retry <= self.retry_max <= 7 * 86400:
            raise InvalidInputError(
                "alerts: retry and retry_max must be durations with 0 < retry <= retry_max <= 7d"
            )

    def delay_after(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after the `attempts`-th failed delivery."""
        delay = min(self.retry_max, self.retry * 2 ** min(max(attempts - 1, 0), 30))
        return float(delay * rng.uniform(0.8, 1.0))


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One pass of delivery: alerts now delivered everywhere, and those left to retry."""

    delivered: list[str] = field(default_factory=list)
    retrying: dict[str, str] = field(default_factory=dict)


def show_command(alert: AlertRecord, log_url: str) -> str:
    """The command line that shows the alert's execution (the log named without a password)."""
    if "://" not in log_url:  # a file: name it from anywhere (a cron job's directory)
        log_url = os.path.abspath(log_url)
    return f"saga --db {shlex.quote(log_url)} show {alert.execution_id}"


def alert_message(alert: AlertRecord, log_url: str) -> dict[str, Any]:
    """What every sink is sent for `alert`: JSON, with a Slack-compatible ``text``."""
    show = show_command(alert, log_url)
    error = None if alert.error is None else alert.error[:ERROR_CHARS]
    where = f" at step {alert.step}" if alert.step else ""
    words = _WORDS.get(alert.kind, alert.kind)
    attempt = f" (attempt {alert.attempt})" if alert.kind == "compensation_failed" else ""
    text = f"saga {alert.saga}: execution {alert.execution_id} {words}{where}{attempt}"
    if error:
        text += f": {error}"
    return {
        **_what(alert),
        "error": error,
        "at": alert.created_at,
        "show": show,
        "text": f"{text}\n`{show}`",
    }


def _what(alert: AlertRecord) -> dict[str, Any]:
    """What an alert is about, as sinks and ``saga alerts --json`` show it."""
    return {
        "id": alert.id,
        "kind": alert.kind,
        "execution_id": alert.execution_id,
        "saga": alert.saga,
        "step": alert.step,
        "attempt": alert.attempt,
    }


def log_name(store: SagaStore) -> str:
    """How messages name the log: its URL without a password."""
    return str(getattr(store, "display_url", store.url))


def deliver_due(
    store: SagaStore,
    settings: AlertSettings,
    *,
    limit: int = 100,
    now: float | None = None,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """Send every due alert (up to `limit`) to the sinks that have not taken it yet.

    Without sinks nothing is claimed: the alerts stay pending in the log.

    Raises:
        StoreError: the log failed (what was sent is sent again later).
    """
    report = DeliveryReport()
    if not settings.sinks:
        return report
    rng = rng or random.Random()
    url = log_name(store)
    lease = sum(getattr(sink, "timeout", 10.0) for sink in settings.sinks) + LEASE_MARGIN
    # Due when the pass began: one that fails now is due later, so a pass sends it once.
    began = time.time() if now is None else now
    for _ in range(limit):
        # One at a time, so a lease need only cover one alert's sends.
        claimed = store.claim_alerts(began, max(began, time.time()) + lease, limit=1)
        if not claimed:
            break
        alert = claimed[0]
        done, errors = set(alert.delivered_to), []
        message = alert_message(alert, url)
        for sink in settings.sinks:
            if sink.name in done:
                continue
            try:
                sink.send(message, alert.id)
            except DeliveryError as exc:
                errors.append(f"{sink.name}: {exc}"[:ERROR_CHARS])
                continue
            done.add(sink.name)
        at = time.time() if now is None else now
        delivered_to = tuple(sorted(done))
        if errors:
            attempts = alert.attempts + 1
            saved = replace(
                alert,
                attempts=attempts,
                next_attempt_at=at + settings.delay_after(attempts, rng),
                delivered_to=delivered_to,
                last_error="; ".join(errors),
            )
            report.retrying[alert.id] = saved.last_error or ""
            log.warning("alert %s not delivered (%s); retried later", alert.id, saved.last_error)
        else:
            saved = replace(
                alert,
                attempts=alert.attempts + 1,
                delivered_at=at,
                delivered_to=delivered_to,
                last_error=None,
            )
            report.delivered.append(alert.id)
            log.info("alert %s delivered to %s", alert.id, ", ".join(delivered_to))
        store.save_delivery(saved)
    return report


def send_test(store: SagaStore, settings: AlertSettings) -> dict[str, str | None]:
    """Send a sample alert to every sink (nothing is written to the log).

    Returns:
        Per sink name, None if it took the sample, else why not.
    """
    now = time.time()
    sample = AlertRecord(
        id=f"test:{int(now * 1000)}",
        execution_id="0" * 32,
        saga="saga-alerts-test",
        kind="stuck",
        step="example-step",
        attempt=1,
        error="a test alert from `saga alerts test`; nothing is wrong",
        created_at=now,
    )
    message = alert_message(sample, log_name(store))
    results: dict[str, str | None] = {}
    for sink in settings.sinks:
        try:
            sink.send(message, sample.id)
        except DeliveryError as exc:
            results[sink.name] = str(exc)
        else:
            results[sink.name] = None
    return results


class Deliverer:
    """Delivers due alerts on a daemon thread, so the engine never waits for a sink.

    It looks every `poll` seconds, and at once when :meth:`wake` is called
    (an orchestrator calls it when an event that may carry an alert is
    durable). :meth:`stop` makes a last pass, bounded by `flush` seconds.

    Args:
        store: the saga log (its alert outbox).
        settings: the sinks and the retry policy.
        poll: seconds between looks.
    """

    def __init__(self, store: SagaStore, settings: AlertSettings, *, poll: float = 1.0) -> None:
        self.store = store
        self.settings = settings
        self.poll = poll
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> Deliverer:
        """Start the thread (nothing happens without sinks); returns self."""
        if self.settings.sinks and self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name="saga-alert-delivery", daemon=True
            )
            self._thread.start()
        return self

    def wake(self) -> None:
        """Look for due alerts now."""
        self._wake.set()

    def stop(self, flush: float = 5.0) -> None:
        """Deliver what is due one last time (for at most `flush` seconds) and stop."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(flush)
            self._thread = None

    def __enter__(self) -> Deliverer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while True:
            self._wake.clear()
            try:
                deliver_due(self.store, self.settings)
            except LogUnavailableError as exc:  # an outage, which the command reports itself
                log.debug("alert delivery waits for the log: %s", exc)
            except SagaError as exc:  # the alerts wait for the next pass
                log.warning("alert delivery failed; retried later: %s", exc)
            except Exception:  # a sink broke: the alerts wait for the next pass
                log.warning("alert delivery failed; retried later", exc_info=True)
            if self._stopping:
                return
            self._wake.wait(self.poll)


def alert_json(alert: AlertRecord) -> dict[str, Any]:
    """The JSON shape of one row of ``saga alerts --json``."""
    return {
        **_what(alert),
        "error": alert.error,
        "created_at": alert.created_at,
        "delivered_at": alert.delivered_at,
        "delivered_to": list(alert.delivered_to),
        "attempts": alert.attempts,
        "next_attempt_at": None if alert.delivered_at is not None else alert.next_attempt_at,
        "last_error": alert.last_error,
    }


def sinks_from(
    webhooks: Iterable[Mapping[str, Any]], commands: Iterable[Mapping[str, Any]]
) -> tuple[Sink, ...]:
    """Sinks from configuration tables (see saga_cli.config); unnamed ones get ``webhook-N``."""
    found: list[Sink] = []
    for number, table in enumerate(webhooks, 1):
        found.append(
            Webhook(
                name=str(table.get("name") or f"webhook-{number}"),
                url=str(table["url"]),
                timeout=float(table.get("timeout", 5.0)),
                headers={str(k): str(v) for k, v in dict(table.get("headers") or {}).items()},
            )
        )
    for number, table in enumerate(commands, 1):
        found.append(
            Command(
                name=str(table.get("name") or f"command-{number}"),
                command=str(table["command"]),
                timeout=float(table.get("timeout", 10.0)),
            )
        )
    return tuple(found)
