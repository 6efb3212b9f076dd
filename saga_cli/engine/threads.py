"""A bounded pool of daemon threads for plain ``def`` steps, whose abandoned calls cost nothing.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined
when the interpreter exits, so one step that hangs past its timeout would
keep the process alive; and a hung call would hold one of its slots for
good. Here every thread is a daemon, and a call the engine gave up on
(:meth:`CallPool.abandon`) stops counting against the bound: a replacement
thread is started, and the abandoned one exits once its call returns, if
ever.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)


class _Job:
    __slots__ = ("function", "args", "future", "abandoned")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.function = function
        self.args = args
        self.future: Future[Any] = Future()
        self.abandoned = False


class CallPool:
    """Runs blocking calls on at most `size` busy threads (plus any abandoned ones).

    Args:
        size: how many calls may run at once; further calls queue.
        name: prefix of the threads' names.
    """

    def __init__(self, size: int, name: str = "saga-call") -> None:
        if size < 1:
            raise ValueError(f"a call pool needs at least one thread (got {size})")
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # threads serving the queue (abandoned ones excluded)
        self._idle = 0
        self._started = 0
        self._closed = False

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue `function(*args)`; the future holds its result or its exception."""
        job = _Job(function, args)
        job.future._saga_job = job  # type: ignore[attr-defined]  # see abandon()
        with self._lock:
            if self._closed:
                raise RuntimeError("the call pool is closed")
            if self._idle == 0 and self._threads < self.size:
                self._start_thread()
            elif self._idle:
                self._idle -= 1  # an idle thread takes it
        self._jobs.put(job)
        return job.future

    def grow(self, size: int) -> None:
        """Allow at least `size` calls at once (a wider window needs more threads)."""
        with self._lock:
            self.size = max(self.size, size)

    def abandon(self, future: Future[Any]) -> None:
        """Stop waiting for the call behind `future`: it no longer takes a slot."""
        job = getattr(future, "_saga_job", None)
        if job is None or job.abandoned or future.done():
            return
        with self._lock:
            job.abandoned = True
            self._threads -= 1

    def close(self) -> None:
        """Let the idle threads exit; calls still running finish on their own."""
        with self._lock:
            self._closed = True
            count = self._threads
        for _ in range(count):
            self._jobs.put(None)

    def _start_thread(self) -> None:
        self._threads += 1
        self._started += 1
        thread = threading.Thread(
            target=self._serve, name=f"{self._name}-{self._started}", daemon=True
        )
        thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future = job.future
            if not future.set_running_or_notify_cancel():
                self._done_with(job)
                continue
            try:
                result = job.function(*job.args)
            except BaseException as exc:  # handed to the waiter
                future.set_exception(exc)
            else:
                future.set_result(result)
            if not self._done_with(job):
                return

    def _done_with(self, job: _Job) -> bool:
        """Book-keep a finished job; False when this thread must exit (it was abandoned)."""
        with self._lock:
            if job.abandoned:
                return False
            self._idle += 1
            return True
