"""gunicorn settings for a GIL-bound app on dbpool: one worker process per CPU, each
pinned to a CPU of its own, and as many threads per worker as it has pooled connections.

    DATABASE_URL="postgresql://app@db:5432/bank?connection_limit=8" \
        gunicorn -c gunicorn.conf.py app:application

See docs/deployment.md for why, and what it is worth.
"""

import os

import dbpool

# The CPUs this server may use: the machine's, or fewer under taskset, cgroups or a
# container's cpuset.
cpus = sorted(os.sched_getaffinity(0))

# One process per CPU: a process runs Python on one CPU at a time (the GIL).
workers = len(cpus)
worker_class = "gthread"
# One thread per pooled connection: a request never waits inside the pool, and requests
# wait for a free thread in gunicorn's queue instead, in the order they came. Read from
# the same DATABASE_URL the app uses (this opens nothing).
threads = dbpool.create_engine().config.connection_limit
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")


def pre_fork(server, worker):
    """In the arbiter, before each fork: give the new worker the CPU with the fewest
    live workers. A worker that died is replaced on the CPU it had (unlike the worker's
    age, which keeps growing as workers are replaced)."""
    taken = [w.cpu for w in server.WORKERS.values() if hasattr(w, "cpu")]
    worker.cpu = min(cpus, key=taken.count)


def post_fork(server, worker):
    """In the new worker, before it loads the app or starts a thread: pin it to its CPU.
    Threads started later inherit the affinity."""
    os.sched_setaffinity(0, {worker.cpu})
    server.log.info("worker %s pinned to CPU %s", worker.pid, worker.cpu)
