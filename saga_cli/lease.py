"""Who owns an execution, and whether that owner is still alive.

An owner id is ``host:pid:start`` where ``start`` is the process's start time
as the kernel reports it, so a recycled pid is not mistaken for the crashed
owner. A dead owner on this host loses its lease at once (``saga resume``
right after a crash needs no waiting); an owner on another host keeps it until
the lease expires, since we cannot see its processes.
"""

from __future__ import annotations

import os
import socket
from functools import cache

from saga_cli.limits import whole
from saga_cli.store import ExecutionRecord, SagaStore

DEFAULT_LEASE_SECONDS = 30.0


def _proc_stat(pid: int) -> list[bytes]:
    """Fields of /proc/PID/stat after the command name, or [] where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return []
    # The command name is parenthesised and may hold spaces: split after it.
    return stat[stat.rfind(b")") + 2 :].split()


def _process_start(pid: int) -> str:
    """The kernel's start time of `pid` in clock ticks (field 22), or ""."""
    fields = _proc_stat(pid)
    return fields[19].decode() if len(fields) > 19 else ""


@cache
def current_owner() -> str:
    """This process's owner id."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def owner_is_dead(owner: str) -> bool:
    """True when `owner` was a process on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    pid = whole(pid_text, 1, 2**31 - 1)
    if host != socket.gethostname() or pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    fields = _proc_stat(pid)
    if fields and fields[0] in (b"Z", b"X"):
        return True  # killed and not yet reaped by its parent
    return bool(start) and len(fields) > 19 and fields[19].decode() != start


def holds_lease(record: ExecutionRecord, now: float) -> bool:
    """True when some live process owns `record` right now."""
    if record.owner is None or record.lease_expires_at is None:
        return False
    if record.lease_expires_at <= now:
        return False
    return not owner_is_dead(record.owner)


def end_dead_leases(store: SagaStore, now: float) -> int:
    """Make the executions of dead owners of this host ready for any worker at once.

    What ``saga list`` calls interrupted and ``saga resume`` takes without
    waiting (an owner on this host whose process is gone), a worker's claim
    takes too: the leases of such owners are expired now, so
    SagaStore.claim_ready sees them. Owners on other hosts keep their leases
    until they run out. Costs one grouped read, and a write only when a dead
    owner is found.

    Returns:
        How many executions were made ready.
    """
    owners = {group.owner for group in store.lease_groups(now) if group.lease_live}
    dead = sorted(owner for owner in owners if owner is not None and owner_is_dead(owner))
    return store.end_leases(dead, now) if dead else 0
