"""A serverless traffic spike on the real PostgreSQL server, straight and through PgBouncer.

More "function instances" than the server's ``max_connections`` start at once, each an
engine with ``connection_limit=1`` running a few transactions that hold the connection in
``pg_sleep``, spread over several worker processes (tests/integration/spike_support.py).
They log in as an ordinary role of their own; a superuser watcher connection samples
``pg_stat_activity`` throughout.

- Straight to PostgreSQL the server fills up: the instances that cannot get in fail with
  ``TooManyConnectionsError`` (P2037), and only with that; the server never shows more
  than ``max_connections``.
- Through PgBouncer in transaction mode (``pgbouncer=true``) with a server pool far below
  ``max_connections``: every instance finishes, and the server never shows more of the
  role's connections than PgBouncer's pool.

Why the outcomes do not depend on the machine's speed: a connection, once in, is held for
``queries * hold`` = 1.5 s, three times the instances' ``pool_timeout`` (0.5 s, within
which a refused instance retries), and all instances start together; so every instance
beyond the server's capacity is refused for longer than it waits. Through PgBouncer a
client connection is accepted at once (``max_client_conn`` is above the instance count)
and transactions queue inside PgBouncer (for up to its ``query_wait_timeout``, 60 s,
against about 12 s of work here), so nothing is refused.

The direct run fills the whole server for about two seconds: a test running next to it
(another session on the same server) may see "too many clients".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests import pgbouncer
from tests.integration import spike_support
from tests.integration.spike_support import TOO_MANY, Role, Spike, SpikeRun
from tests.servers import REQUIRE_DATABASES

pytestmark = pytest.mark.slow

PROCESSES = 6
POOL_SIZE = 20  # PgBouncer's server connections: a fifth of the default max_connections
MOST_INSTANCES = 300  # beyond this (a server with a large max_connections) it's a benchmark


@pytest.fixture
def role(postgres_url: str) -> Iterator[Role]:
    with spike_support.spike_role(postgres_url) as made:
        yield made


@pytest.fixture
def limits(postgres_url: str) -> tuple[int, int]:
    """(max_connections, superuser_reserved_connections)."""
    return spike_support.server_limits(postgres_url)


@pytest.fixture
def spike(limits: tuple[int, int]) -> Spike:
    max_connections, _ = limits
    instances = max_connections + max(max_connections // 2, 20)
    if instances > MOST_INSTANCES:
        pytest.skip(
            f"max_connections is {max_connections}: a spike above it is too big for a test "
            "(run benchmarks/spike.py)"
        )
    return Spike(instances=instances, processes=PROCESSES, queries=3, hold=0.5,
                 pool_timeout=0.5)  # fmt: skip


def describe(run: SpikeRun) -> str:
    return (
        f"{len(run.failures)} of {len(run.outcomes)} failed ({dict(run.errors_by_kind())}), "
        f"role peak {run.role_peak}, server peak {run.server_peak}, {run.samples} samples"
    )


def test_straight_to_postgresql_the_instances_beyond_the_limit_get_p2037(
    postgres_url: str, role: Role, limits: tuple[int, int], spike: Spike
) -> None:
    max_connections, reserved = limits
    with spike_support.direct(postgres_url, role) as route:
        run = spike_support.run_spike(route.url, spike, admin_url=postgres_url, role=role.name)

    assert len(run.outcomes) == spike.instances
    others = [o for o in run.failures if (o.error, o.code) != (TOO_MANY, "P2037")]
    assert not others, f"failures other than TooManyConnectionsError: {others[:5]}"
    assert run.failures, f"the server took every instance: {describe(run)}"
    assert len(run.failures) < spike.instances, describe(run)  # some got in and finished
    for failure in run.failures:
        assert role.password not in (failure.message or "")
    # The server's own view: never more than it allows, and the role never in the
    # superuser-reserved slots.
    assert run.samples >= 20, describe(run)
    assert run.server_peak <= max_connections, describe(run)
    assert 0 < run.role_peak <= max_connections - reserved, describe(run)
    assert route.lingering == 0, "instances' sessions outlived their disposed engines"


def test_through_pgbouncer_every_instance_finishes_within_the_pool(
    postgres_url: str, role: Role, spike: Spike
) -> None:
    with contextlib.ExitStack() as stack:
        try:
            route = stack.enter_context(
                spike_support.through_pgbouncer(
                    postgres_url, role, pool_size=POOL_SIZE, clients=spike.instances + 50
                )
            )
        except pgbouncer.PgBouncerUnavailable as exc:
            if REQUIRE_DATABASES:
                pytest.fail(f"{exc} and DBPOOL_REQUIRE_DATABASES=1")
            pytest.skip(str(exc))
        run = spike_support.run_spike(route.url, spike, admin_url=postgres_url, role=role.name)

    assert len(run.outcomes) == spike.instances
    assert not run.failures, f"{describe(run)}; first: {run.failures[0]}"
    assert run.samples >= 20, describe(run)
    assert 0 < run.role_peak <= POOL_SIZE, describe(run)
    assert route.lingering == 0, "server connections outlived PgBouncer"
