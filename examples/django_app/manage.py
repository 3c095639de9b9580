#!/usr/bin/env python
"""A small Django project on dbpool's Django backend, for a real threaded WSGI server.

One app (``catalog``) with one model (``Product``) and one view, ``/products/<id>/``,
that makes two queries (the product, and how many products there are). The database
comes from ``DATABASE_URL`` through ``dbpool.contrib.django.config()``, pool settings
included. Run it from this directory::

    export DATABASE_URL="postgresql://postgres@127.0.0.1:5432/shop?connection_limit=4"
    python manage.py migrate            # the table and 50 sample products
    gunicorn --worker-class gthread --workers 1 --threads 64 \\
        --bind 127.0.0.1:8000 djapp.wsgi
    curl http://127.0.0.1:8000/products/7/
    curl http://127.0.0.1:8000/pool/    # the pool's status, as JSON
    python loadtest.py http://127.0.0.1:8000 --clients 64 --seconds 5

``python loadtest.py --serve`` starts such a gunicorn itself on a free port, loads it
from its own process and prints a JSON summary (requests/s, p50/p99, errors, and the
pool's status afterwards); tests/integration/test_django_app.py and
benchmarks/django_load.py drive it that way.

Without ``DATABASE_URL`` it uses ``db.sqlite3`` next to this file. MySQL and MariaDB
URLs (``mysql://root@127.0.0.1:3306/shop?connection_limit=4``) work the same way,
over PyMySQL.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
