"""A small Flask app on dbpool: notes kept in one table, built by an application factory.

Run it with the database of your choice (the default is a SQLite file here)::

    DATABASE_URL="postgresql://app@localhost:5432/app?connection_limit=4" \\
        python examples/flask_app.py
    curl -X POST -H 'Content-Type: application/json' -d '{"body": "hi"}' localhost:5000/notes
    curl localhost:5000/notes
    curl localhost:5000/metrics
    DATABASE_URL=sqlite:///flask_app.db flask --app examples/flask_app.py dbpool check

The tests (tests/integration/test_flask.py) serve it with a threaded server under load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, abort, jsonify, request

from dbpool import text
from dbpool.contrib.flask import DBPool

db = DBPool()
views = Blueprint("notes", __name__)

SCHEMA = "CREATE TABLE IF NOT EXISTS notes (body VARCHAR(200) NOT NULL)"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app; ``config`` may set DATABASE_URL (else the environment variable is read)
    and DBPOOL_SETTINGS."""
    app = Flask(__name__)
    app.config.update(config or {})
    db.init_app(app)
    app.register_blueprint(views)
    with app.app_context(), db.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
    return app


@views.get("/notes")
def list_notes() -> Response:
    bodies = db.connection().execute(text("SELECT body FROM notes ORDER BY body")).scalars()
    return jsonify(bodies.all())


@views.post("/notes")
def add_note() -> tuple[Response, int]:
    body = (request.get_json(silent=True) or {}).get("body")
    if not isinstance(body, str) or not 0 < len(body) <= 200:
        abort(400, "expected JSON {'body': '1 to 200 characters'}")
    with db.begin() as conn:  # committed when the block ends, rolled back if it raises
        conn.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": body})
    return jsonify(body=body), 201


@views.get("/health")
def health() -> dict[str, str]:
    db.connection().execute(text("SELECT 1")).scalar_one()
    return {"status": "ok"}


@views.get("/metrics")
def metrics() -> Response:
    """This process's pool metrics for Prometheus to scrape."""
    return Response(db.engine.metrics.prometheus(), mimetype="text/plain; version=0.0.4")


if __name__ == "__main__":
    url = os.environ.get("DATABASE_URL", "sqlite:///flask_app.db")
    create_app({"DATABASE_URL": url}).run(threaded=True)
