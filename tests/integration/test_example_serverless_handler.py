"""examples/serverless_handler.py: one connection per function instance, never more.

Each child process plays one function instance: it imports the handler module (the cold
start) and invokes ``handler`` many times. Every instance connects with an
``application_name`` of its own, and the test, sampling ``pg_stat_activity`` all along,
checks that no instance ever holds more than one connection, that each holds exactly
one while warm (so the count can fail), and that none is left once the instances
dispose of their engine or end.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import dbpool
from dbpool import make_url, text
from tests.integration.examples_support import DEADLINE, EXAMPLES, observer_engine
from tests.servers import need_module
from tests.test_lifecycle import ROOT, Script

HANDLER = EXAMPLES / "serverless_handler.py"

# One function instance: import (cold start), then invocations from `threads` threads at
# once (platforms such as Azure Functions run several per instance), then on "dispose"
# the engine is disposed, on "exit" the process just ends, as a reclaimed instance does.
INSTANCE = """
import json, sys, threading
sys.path.insert(0, {examples!r})
import serverless_handler

views = []

def invoke():
    for _ in range({invocations}):
        response = serverless_handler.handler({{"page": {page!r}}}, None)
        assert response["statusCode"] == 200, response
        views.append(json.loads(response["body"])["views"])

threads = [threading.Thread(target=invoke) for _ in range({threads})]
for t in threads:
    t.start()
for t in threads:
    t.join()
status = serverless_handler.engine.status()
print(f"{{len(views)}} invocations, opened {{status.opened_total}}, limit "
      f"{{status.connection_limit}}", flush=True)
print("invoked", flush=True)
if sys.stdin.readline().strip() == "dispose":
    serverless_handler.engine.dispose()
    print("disposed", flush=True)
    sys.stdin.readline()
"""


class Watcher:
    """Samples, in a thread, how many connections each instance holds on the server."""

    def __init__(self, observer: dbpool.Engine, prefix: str) -> None:
        self.observer = observer
        self.prefix = prefix
        self.most: Counter[str] = Counter()  # instance -> most connections seen at once
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watcher")

    def counts(self) -> Counter[str]:
        with self.observer.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE application_name LIKE :prefix GROUP BY application_name"
                ),
                {"prefix": self.prefix + "%"},
            ).all()
        return Counter({name: int(count) for name, count in rows})

    def wait_for(self, wanted: dict[str, int]) -> Counter[str]:
        deadline = time.monotonic() + DEADLINE
        while (counts := self.counts()) != Counter(wanted) and time.monotonic() < deadline:
            time.sleep(0.02)
        return counts

    def _watch(self) -> None:
        while not self._stop.is_set():
            for name, count in self.counts().items():
                self.most[name] = max(self.most[name], count)
            self.samples += 1

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """The test database with the example's table (made as at deploy time, by the
    example's own ``migrate``), dropped afterwards."""
    proc = subprocess.run(
        [sys.executable, str(HANDLER), "migrate"],
        env={"PYTHONPATH": str(ROOT), "DATABASE_URL": postgres_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    yield postgres_url
    with observer_engine(postgres_url) as observer, observer.connect() as conn:
        conn.execute(text("DROP TABLE IF EXISTS dbpool_ex_page_views"))


@pytest.fixture
def watcher(database_url: str) -> Iterator[Watcher]:
    observer = observer_engine(database_url)
    yield Watcher(observer, f"dbpool-fn-{uuid.uuid4().hex[:10]}-")
    observer.dispose()


def start_instance(
    database_url: str,
    application_name: str,
    page: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    invocations: int,
    threads: int = 1,
) -> Script:
    url = make_url(database_url).update_query({"application_name": application_name})
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    return Script(
        INSTANCE.format(
            examples=str(EXAMPLES), invocations=invocations, threads=threads, page=page
        )
    )


def page_views(database_url: str, page: str) -> int:
    with observer_engine(database_url) as observer, observer.connect() as conn:
        return int(
            conn.execute(
                text("SELECT COUNT(*) FROM dbpool_ex_page_views WHERE page = :page"),
                {"page": page},
            ).scalar_one()
        )


def test_many_invocations_in_one_instance_share_one_connection(
    database_url: str, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, page = watcher.prefix + "0", f"/one-{uuid.uuid4().hex[:8]}"
    with watcher:
        instance = start_instance(database_url, name, page, monkeypatch, invocations=40, threads=4)
        instance.expect("invoked")
        warm = watcher.wait_for({name: 1})

    assert warm == {name: 1}, "a warm instance keeps its one connection open"
    assert watcher.most == {name: 1}, f"never more than one ({watcher.samples} samples)"
    assert instance.lines[-2] == "160 invocations, opened 1, limit 1"
    assert page_views(database_url, page) == 160
    instance.tell("dispose")
    instance.expect("disposed")
    assert watcher.wait_for({}) == {}, "dispose() closed it while the process lives"
    instance.tell("exit")
    assert instance.finish() == 0, instance.stderr


def test_several_instances_hold_one_connection_each_and_none_once_they_end(
    database_url: str, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = f"/many-{uuid.uuid4().hex[:8]}"
    names = [watcher.prefix + str(i) for i in range(4)]
    with watcher:
        instances = [
            start_instance(database_url, name, page, monkeypatch, invocations=30) for name in names
        ]
        for instance in instances:
            instance.expect("invoked")
        warm = watcher.wait_for(dict.fromkeys(names, 1))

    assert warm == dict.fromkeys(names, 1)
    assert watcher.most == dict.fromkeys(names, 1), (watcher.most, watcher.samples)
    assert [i.lines[-2] for i in instances] == ["30 invocations, opened 1, limit 1"] * 4
    assert page_views(database_url, page) == 120

    disposing, ending = instances[:2], instances[2:]
    for instance in disposing:
        instance.tell("dispose")
        instance.expect("disposed")
    assert watcher.wait_for(dict.fromkeys(names[2:], 1)) == dict.fromkeys(names[2:], 1)
    for instance in ending:  # reclaimed without a word: the server sees the sockets close
        instance.tell("exit")
    for instance in disposing:
        instance.tell("exit")
    assert [instance.finish() for instance in instances] == [0, 0, 0, 0]
    assert watcher.wait_for({}) == {}


def test_run_locally_three_warm_invocations_open_one_connection(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(HANDLER)],
        cwd=str(tmp_path),
        env={"PYTHONPATH": str(ROOT), "DATABASE_URL": "sqlite:///fn.db", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr
    *responses, status = proc.stdout.splitlines()
    assert [json.loads(ast.literal_eval(r)["body"])["views"] for r in responses] == [1, 2, 3]
    assert "opened_total=1" in status and "connection_limit=1" in status


def test_an_unreachable_database_is_a_503_without_details_for_the_caller(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    need_module("psycopg")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://fn:s3cret-pw@127.0.0.1:{port}/app")
    spec = importlib.util.spec_from_file_location("serverless_handler_503", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the cold start: lazy, nothing connects yet
    try:
        with caplog.at_level(logging.WARNING):
            response = module.handler({"page": "/"}, None)
    finally:
        module.engine.dispose()

    assert response == {"statusCode": 503, "body": '{"error": "database busy, try again"}'}
    (record,) = [r for r in caplog.records if r.name == "serverless_handler_503"]
    assert f"127.0.0.1:{port}" in record.getMessage()
    assert "s3cret-pw" not in caplog.text
