"""retry_on_deadlock against a real deadlock: two transactions lock two rows in opposite order."""

import threading

import pytest
import sqlalchemy as sa

from glance_cache_mw.db import engine as db_engine, models
from tests.db.helpers import admin_context, create_image


def _crossed_updates(first, second, barrier, attempts):
    """Lock ``first``, wait for the other thread to lock its row, then lock ``second``."""
    @db_engine.retry_on_deadlock
    def transaction():
        attempts.append(1)
        with db_engine.writer() as conn:
            stmt = models.images.update().values(min_ram=models.images.c.min_ram + 1)
            conn.execute(stmt.where(models.images.c.id == first))
            if len(attempts) <= 2:          # only the first tries of both threads cross
                barrier.wait(timeout=30)
            conn.execute(stmt.where(models.images.c.id == second))
    return transaction


def test_a_real_deadlock_is_retried_until_both_transactions_commit(db):
    if db.backend == "sqlite":
        # SQLite has no row locks: BEGIN IMMEDIATE makes writers queue, never deadlock.
        # The other two backends are the point of this test.
        a, b = create_image()["id"], create_image()["id"]
        attempts = []
        _crossed_updates(a, b, threading.Barrier(1), attempts)()
        assert len(attempts) == 1
        return
    a, b = create_image()["id"], create_image()["id"]
    barrier, attempts, errors = threading.Barrier(2), [], []

    def run(transaction):
        try:
            transaction()
        except Exception as err:  # a test thread must report, not die silently
            errors.append(err)

    threads = [threading.Thread(target=run, args=(_crossed_updates(x, y, barrier, attempts),))
               for x, y in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(attempts) >= 3            # one of the two lost the deadlock and ran again
    with db.engine.connect() as conn:
        rams = conn.execute(sa.select(models.images.c.min_ram)
                            .where(models.images.c.id.in_([a, b]))).scalars().all()
    assert rams == [2, 2]                # both transactions committed, each exactly once


def test_other_errors_are_not_retried(db):
    attempts = []

    @db_engine.retry_on_deadlock
    def broken():
        attempts.append(1)
        with db_engine.writer() as conn:
            conn.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(sa.exc.DBAPIError):
        broken()
    assert attempts == [1]
