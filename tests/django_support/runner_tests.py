"""Tests that Django's own test runner runs (``python -m django test``) on a dbpool backend.

tests/integration/test_django_runner.py starts the runner in a subprocess and checks
the database server before and after.
"""

import threading
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connection, transaction
from django.test import TestCase, TransactionTestCase, skipUnlessDBFeature

from tests.django_support.models import Item


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a new thread with its own connection, returned at the end."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc
        finally:
            close_old_connections()
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if "error" in result:
        raise result["error"]
    return result.get("value")


class PooledTestCase(TestCase):
    def test_runs_on_the_test_database_through_the_pool(self) -> None:
        Item.objects.create(name="a")
        name = str(connection.settings_dict["NAME"])
        self.assertIn("test", name)
        self.assertGreaterEqual(connection.dbpool_engine.status().busy, 1)
        self.assertEqual(Item.objects.count(), 1)

    def test_each_test_starts_empty(self) -> None:
        self.assertEqual(Item.objects.count(), 0)

    def test_savepoint_rolls_back_inner_block(self) -> None:
        with transaction.atomic():
            Item.objects.create(name="outer")
            try:
                with transaction.atomic():
                    Item.objects.create(name="inner")
                    raise ValueError
            except ValueError:
                pass
        self.assertEqual(list(Item.objects.values_list("name", flat=True)), ["outer"])

    def test_on_commit_captured(self) -> None:
        ran = []
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            transaction.on_commit(lambda: ran.append(1))
        self.assertEqual((len(callbacks), ran), (1, [1]))


class PooledTransactionTestCase(TransactionTestCase):
    available_apps = ["tests.django_support"]

    def test_commit_is_seen_by_another_thread(self) -> None:
        Item.objects.create(name="committed")
        connection.close()
        self.assertEqual(in_thread(lambda: Item.objects.count()), 1)

    def test_on_commit_runs_after_commit(self) -> None:
        ran = []
        with transaction.atomic():
            Item.objects.create(name="x")
            transaction.on_commit(lambda: ran.append("done"))
            self.assertEqual(ran, [])
        self.assertEqual(ran, ["done"])

    def test_tables_were_flushed(self) -> None:
        self.assertEqual(Item.objects.count(), 0)

    @skipUnlessDBFeature("has_select_for_update_nowait")
    def test_select_for_update_locks_the_row(self) -> None:
        from django.db import DatabaseError

        Item.objects.create(name="locked")
        with transaction.atomic():
            Item.objects.select_for_update().get(name="locked")

            def try_lock() -> str:
                try:
                    with transaction.atomic():
                        Item.objects.select_for_update(nowait=True).get(name="locked")
                except DatabaseError:
                    return "refused"
                return "acquired"

            self.assertEqual(in_thread(try_lock), "refused")
        self.assertEqual(in_thread(try_lock), "acquired")
