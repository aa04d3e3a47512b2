"""A lease per registered model in the SQL database: at most one controller acts on a model at a time.

Acquiring is one atomic statement (an UPDATE that only matches an expired lease or our own, else an INSERT
that the primary key lets only one writer win), so it works the same on SQLite and PostgreSQL. A lease
expires: a controller killed while holding it blocks others for at most the TTL. A live holder renews it
from a heartbeat thread and checks it is still the holder before each registry write (`ensure`).
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import insert, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lifecycle.db import leases
from registry.errors import PlatformError


class LeaseLost(PlatformError):
    """Another controller holds (or took over) the model's lease."""


class Lease:
    def __init__(self, eng: Engine, model_name: str, holder: str, ttl: float):
        self.engine, self.model_name, self.holder, self.ttl = eng, model_name, holder, ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def try_acquire(self) -> bool:
        now = time.time()
        values = {"holder": self.holder, "acquired_at": now, "expires_at": now + self.ttl}
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(leases)
                .where(
                    leases.c.model_name == self.model_name,
                    or_(leases.c.expires_at < now, leases.c.holder == self.holder),
                )
                .values(**values)
            ).rowcount
        if taken == 1:
            return True
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(leases).values(model_name=self.model_name, **values))
            return True
        except IntegrityError:
            return False

    def renew(self) -> bool:
        with self.engine.begin() as conn:
            ok = (
                conn.execute(
                    update(leases)
                    .where(leases.c.model_name == self.model_name, leases.c.holder == self.holder)
                    .values(expires_at=time.time() + self.ttl)
                ).rowcount
                == 1
            )
        self.lost = self.lost or not ok
        return ok

    def ensure(self) -> None:
        """Call before writing: renews the lease, or stops this controller if it is no longer the holder."""
        if self.lost or not self.renew():
            raise LeaseLost(f"lost the lease on {self.model_name}; another controller took over")

    def holder_now(self) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(leases.select().where(leases.c.model_name == self.model_name)).first()
        return row.holder if row and row.expires_at >= time.time() else None

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        with self.engine.begin() as conn:
            conn.execute(
                update(leases)
                .where(leases.c.model_name == self.model_name, leases.c.holder == self.holder)
                .values(expires_at=0.0)
            )

    def __enter__(self) -> "Lease":
        self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="lease-heartbeat")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.renew():
                    return
            except Exception:  # a transient database error: the next beat (or `ensure`) tells
                continue
