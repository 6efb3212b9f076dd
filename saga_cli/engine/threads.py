"""A bounded pool of daemon threads for plain ``def`` steps, whose abandoned calls cost nothing.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined
when the interpreter exits, so one step that hangs past its timeout would
keep the process alive; a hung call would hold one of its slots for good;
and each call pays for a concurrent future with its own condition variable,
then for chaining it to an asyncio one. Here every thread is a daemon, a
call hands its result straight to the event loop, and a call the engine
gave up on (:meth:`CallPool.abandon`) stops counting against the bound: the
thread running it exits once it returns, if ever, and another takes its place.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any


class Job:
    """One call waiting for, or running on, a thread of the pool."""

    __slots__ = ("function", "argument", "loop", "future", "abandoned", "finished")

    def __init__(
        self,
        function: Callable[[Any], Any],
        argument: Any,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.function = function
        self.argument = argument
        self.loop = loop
        self.future = future
        self.abandoned = False
        self.finished = False


class CallPool:
    """Runs blocking calls on at most `size` threads at once (abandoned ones aside).

    Args:
        size: how many calls may run at once; further calls queue.
        name: prefix of the threads' names.
    """

    def __init__(self, size: int, name: str = "saga-call") -> None:
        if size < 1:
            raise ValueError(f"a call pool needs at least one thread (got {size})")
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # threads serving the queue, abandoned ones excluded
        self._idle = 0  # of those, how many wait for a job
        self._started = 0

    def call(
        self, function: Callable[[Any], Any], argument: Any
    ) -> tuple[Job, asyncio.Future[Any]]:
        """Queue ``function(argument)``; await the future for its result or its exception.

        Must be called on the thread of the running event loop that awaits it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = Job(function, argument, loop, future)
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes it
            elif self._threads < self.size:
                self._start_thread()
        self._jobs.put(job)
        return job, future

    def grow(self, size: int) -> None:
        """Allow at least `size` calls at once (a wider window needs more threads)."""
        with self._lock:
            self.size = max(self.size, size)

    def abandon(self, job: Job) -> None:
        """Stop waiting for `job`: once running, it no longer takes a slot of the pool."""
        with self._lock:
            if not (job.abandoned or job.finished):
                job.abandoned = True
                self._threads -= 1

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
            if job.abandoned:  # given up before it started: nothing to run
                with self._lock:
                    job.abandoned = False  # its slot was given back; this thread keeps it
                    self._threads += 1
                    self._idle += 1
                continue
            try:
                result = job.function(job.argument)
            except BaseException as exc:  # handed to the awaiting task
                self._hand_back(job, None, exc)
            else:
                self._hand_back(job, result, None)
            with self._lock:
                job.finished = True
                if job.abandoned:
                    return  # a replacement serves the queue now
                self._idle += 1

    @staticmethod
    def _hand_back(job: Job, result: Any, error: BaseException | None) -> None:
        try:
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled: the caller gave up (a timeout)
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
