"""Settings modules for running Django's own test suite (tests/django_suite/run.py).

One module per (database, backend) pair. Stock and dbpool sides differ only in ENGINE
and the pool OPTIONS: same server, same driver, same database names apart from the
side's own prefix, so a difference in results is the pool's doing.
"""
