"""QueuePool.connect() reuses the proxy a connection was last returned through, but only
when nobody holds that proxy any more: a held one is a stale handle and keeps failing."""

from __future__ import annotations

import gc
import sys

import pytest

from dbpool import PooledConnection, ResourceClosedError
from tests.fakedb import FakeDB, MakePool, assert_consistent

cpython_only = pytest.mark.skipif(
    sys.implementation.name != "cpython", reason="reuse needs sys.getrefcount"
)


@cpython_only
def test_a_proxy_nobody_holds_is_handed_out_again(make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1)
    first = pool.connect()
    first_id = id(first)
    first.close()
    del first
    again = pool.connect()
    assert id(again) == first_id  # the same object, revived
    assert not again.closed
    again.close()


def test_a_returned_proxy_still_held_is_never_revived(db: FakeDB, make_pool: MakePool) -> None:
    pool = make_pool(connection_limit=1)
    stale = pool.connect()
    stale.close()
    fresh = pool.connect()  # the same connection, through another proxy
    assert fresh is not stale
    assert fresh.driver_connection is db.connections[0]
    with pytest.raises(ResourceClosedError):
        stale.cursor()
    with pytest.raises(ResourceClosedError):
        stale.close()
    assert stale.closed and not fresh.closed
    fresh.close()
    assert_consistent(pool, db, busy=0)


def test_a_kept_bound_method_keeps_its_proxy_from_being_revived(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(connection_limit=1)
    conn = pool.connect()
    commit = conn.commit  # holds the proxy
    conn.close()
    del conn
    other = pool.connect()
    with pytest.raises(ResourceClosedError):
        commit()
    other.close()


def test_a_revived_proxy_dropped_unreturned_is_reclaimed_where_it_was_taken(
    db: FakeDB, make_pool: MakePool
) -> None:
    pool = make_pool(connection_limit=1, pool_timeout=5)
    pool.connect().close()  # leaves a spare proxy on the connection

    def leak_one() -> None:
        pool.connect()  # the warning names this line

    with pytest.warns(ResourceWarning, match="garbage-collected without being closed") as record:
        leak_one()
        gc.collect()
    line = leak_one.__code__.co_firstlineno + 1
    assert f"test_proxy_reuse.py:{line})" in str(record[0].message)
    with pool.connect() as conn:  # the slot came back
        assert isinstance(conn, PooledConnection)
    assert_consistent(pool, db, busy=0)


def test_an_idle_pool_holds_no_cycle_through_its_spare_proxies(make_pool: MakePool) -> None:
    """A spare proxy refers to neither its pool nor its record, so a forgotten pool and its
    idle connections go away by reference counting, not at the next cyclic collection."""
    pool = make_pool(connection_limit=2)
    a, b = pool.connect(), pool.connect()
    a.close()
    b.close()
    for record in pool._idle:
        assert record.spare is not None
        assert record.spare._pool is None and record.spare._record is None
        assert gc.get_referrers(record.spare) == [record]
