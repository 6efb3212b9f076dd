"""The travel demo's tables in the saga log's database, and its circuit breakers' state.

The demo's in-process services keep their state next to the saga log, as a
client of the store's extension point: each opens connections of its own
(:meth:`SagaStore.participant`), and their tables come from the demo's own
migration branch (``migrations/versions/demo_0001_travel_demo.py``), applied
the first time a service or a breaker needs the database. A log that never
ran the demo holds only the saga tables.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence

from saga_cli.breaker import BreakerPolicy, BreakerSnapshot, BreakerState, CircuitBreaker
from saga_cli.store import Participant, SagaStore

# The label of the demo's migration branch (see store/migrate.py BRANCHES).
BRANCH = "demo"


class DemoDatabase:
    """The log's database as the demo's services use it: their tables made on first use.

    Args:
        store: the saga log. Only its extension point is used: upgrade_branch
            once, then participant() for every connection. Connections may be
            opened after the store is closed (``saga serve`` does).
    """

    def __init__(self, store: SagaStore) -> None:
        self._store = store
        self._ready = False
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Apply the demo's migration branch if this database has not seen it yet.

        Raises:
            StoreError: the branch cannot be applied (MigrationError), or the log
                is newer than this saga (SchemaTooNewError).
        """
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self._store.upgrade_branch(BRANCH)
                self._ready = True

    def exists(self) -> bool:
        """Whether the demo's tables are in this database (read only: nothing is made)."""
        return self._ready or BRANCH in self._store.branches()

    def connect(self) -> Participant:
        """A new connection for one service (one per thread), the demo's tables ready.

        Raises:
            StoreError: as prepare, or the database cannot be reached.
        """
        self.prepare()
        return self._store.participant()


_SAVE = (
    "INSERT INTO circuit_breaker (service, state, failures, opened_at, last_error, updated_at)"
    " VALUES (?,?,?,?,?,?) ON CONFLICT (service) DO UPDATE SET"
    " state=excluded.state, failures=excluded.failures, opened_at=excluded.opened_at,"
    " last_error=excluded.last_error, updated_at=excluded.updated_at"
)


class BreakerBoard(Mapping[str, CircuitBreaker]):
    """A circuit breaker per service, its state kept in the log's database.

    Every process on the log shares the states (table ``circuit_breaker``):
    ``saga services`` shows them and a new process starts from what the last
    one saw. They are read when a breaker is first looked up, so a process
    that never calls a service never touches the demo's tables, and each
    change is written back at once (changes are rare: a failure, a recovery).

    Args:
        database: where the states live.
        services: the services, one breaker each.
        policy: threshold and cool-down of every breaker.
    """

    def __init__(
        self,
        database: DemoDatabase,
        services: Sequence[str],
        policy: BreakerPolicy | None = None,
    ) -> None:
        self._database = database
        self._services = tuple(services)
        self._policy = policy or BreakerPolicy()
        self._breakers: dict[str, CircuitBreaker] | None = None
        self._db: Participant | None = None
        self._lock = threading.Lock()  # guards the loading and the one connection

    def __getitem__(self, service: str) -> CircuitBreaker:
        breakers = self._breakers
        if breakers is None:
            breakers = self._load()
        return breakers[service]

    def __iter__(self) -> Iterator[str]:
        return iter(self._services)

    def __len__(self) -> int:
        return len(self._services)

    def close(self) -> None:
        """Close the connection the states are read and written on."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _load(self) -> dict[str, CircuitBreaker]:
        with self._lock:
            if self._breakers is None:
                rows = self._connection().query(
                    "SELECT service, state, failures, opened_at, last_error, updated_at"
                    " FROM circuit_breaker ORDER BY service"
                )
                known = {
                    service: BreakerSnapshot(
                        service, BreakerState(state), failures, opened_at, error, updated
                    )
                    for service, state, failures, opened_at, error, updated in rows
                }
                self._breakers = {
                    name: CircuitBreaker(
                        known.get(name, BreakerSnapshot(name)), self._policy, self._save
                    )
                    for name in self._services
                }
            return self._breakers

    def _save(self, snapshot: BreakerSnapshot) -> None:
        with self._lock:
            self._connection().execute(
                _SAVE,
                (
                    snapshot.service,
                    snapshot.state.value,
                    snapshot.failures,
                    snapshot.opened_at,
                    snapshot.last_error,
                    snapshot.updated_at,
                ),
            )

    def _connection(self) -> Participant:
        if self._db is None:
            self._db = self._database.connect()
        return self._db
