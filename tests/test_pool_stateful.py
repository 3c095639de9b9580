"""A hypothesis state machine over the pool: any sequence of operations keeps its books.

After every step the invariants hold: never more than ``connection_limit`` open, every
open connection either busy or idle, the fake server's live connections equal to what
the pool counts as open, nobody left waiting, and ``opened - closed == open``.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dbpool import PooledConnection, PoolTimeoutError, QueuePool, ResourceClosedError
from tests.fakedb import FakeDB, OperationalError, assert_consistent

LIMIT = 3


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.db = FakeDB()
        # A tiny pool_timeout: a checkout on a full pool times out at once. The janitor's
        # idle lifetime is far beyond a test run, so only the rules below change the pool.
        self.pool = QueuePool(self.db.connect, connection_limit=LIMIT, pool_timeout=0.005)
        self.held: list[PooledConnection] = []
        self.returned: list[PooledConnection] = []
        self.timeouts = 0

    def teardown(self) -> None:
        for conn in self.held:
            conn.close()
        self.pool.dispose()
        assert self.db.live == 0

    @precondition(lambda self: len(self.held) < LIMIT)
    @rule()
    def checkout(self) -> None:
        conn = self.pool.connect()
        assert not conn.driver_connection.closed
        assert all(conn.driver_connection is not h.driver_connection for h in self.held)
        self.held.append(conn)

    @precondition(lambda self: len(self.held) == LIMIT)
    @rule()
    def checkout_times_out(self) -> None:
        with pytest.raises(PoolTimeoutError):
            self.pool.connect()
        self.timeouts += 1

    @precondition(lambda self: len(self.held) < LIMIT and self.pool.status().idle == 0)
    @rule()
    def checkout_fails_to_connect(self) -> None:
        self.db.fail_connects = 1
        with pytest.raises(OperationalError):
            self.pool.connect()
        self.db.fail_connects = 0

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        conn = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        conn.close()
        self.returned.append(conn)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), in_transaction=st.booleans())
    def give_back_after_a_statement(self, data: st.DataObject, in_transaction: bool) -> None:
        conn = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        driver_conn = conn.driver_connection
        if in_transaction:
            conn.cursor().execute("UPDATE t SET a = 1")
        rollbacks = driver_conn.rollbacks
        conn.close()
        assert driver_conn.rollbacks == rollbacks + (1 if in_transaction else 0)
        assert not driver_conn.in_transaction

    @precondition(lambda self: bool(self.returned))
    @rule()
    def give_back_twice(self) -> None:
        with pytest.raises(ResourceClosedError):
            self.returned[-1].close()

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def invalidate(self, data: st.DataObject) -> None:
        conn = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        driver_conn = conn.driver_connection
        conn.invalidate()
        assert driver_conn.closed

    @rule()
    def dispose(self) -> None:
        self.pool.dispose()
        assert self.pool.status().idle == 0
        assert all(not conn.driver_connection.closed for conn in self.held)

    @rule()
    def open(self) -> None:
        self.pool.open()
        assert self.pool.status().open >= 1

    @invariant()
    def books_balance(self) -> None:
        assert_consistent(self.pool, self.db, busy=len(self.held))
        assert self.pool.status().timeouts_total == self.timeouts


PoolMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestPoolMachine = PoolMachine.TestCase
