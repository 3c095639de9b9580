"""The name a program's connections carry on the server by default.

PostgreSQL shows it as ``application_name`` (pg_stat_activity), MySQL and MariaDB as the
``program_name`` connection attribute (performance_schema.session_connect_attrs). It is
``dbpool:`` followed by what the program is, the same for every instance of the same
program, so that ``dbpool budget``, the server's own views and the idle-connection reaper
can group one application's connections and tell them from everyone else's:

* a script or console command: the basename of ``sys.argv[0]`` (``dbpool:worker.py``,
  ``dbpool:celery``);
* ``python -m pkg``: the module (``dbpool:pkg``), not the path of its ``__main__.py``;
* a WSGI/ASGI server (gunicorn, uvicorn, ...): the server and the application's module,
  from its ``module:attribute`` argument (``dbpool:gunicorn shop.wsgi``), so that two
  applications served by gunicorn on one database stay apart;
* a Jupyter kernel: ``dbpool:jupyter``; an interactive or ``python -c`` session, or an
  embedded interpreter without ``sys.argv``: ``dbpool:python``.

The name is printable ASCII (anything else becomes ``?``, as PostgreSQL itself does) and
at most 63 bytes, PostgreSQL's limit, so the server keeps it exactly as sent.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

PREFIX = "dbpool:"
# PostgreSQL keeps NAMEDATALEN - 1 bytes of application_name and drops the rest.
MAX_LENGTH = 63

# Programs whose identity is the application they serve, given as ``module:attribute``.
_SERVERS = frozenset(
    {"daphne", "granian", "gunicorn", "hypercorn", "uvicorn", "uwsgi", "waitress-serve"}
)
# ``python -m`` modules and launchers that are Jupyter kernels.
_JUPYTER = frozenset({"ipykernel_launcher", "ipykernel", "colab_kernel_launcher"})
_APP_ARGUMENT = re.compile(
    r"(?:--\w[\w-]*=)?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_][\w.]*(?:\(.*\))?"
)
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def default_application_name(
    argv: Sequence[str] | None = None, main_module: str | None = None
) -> str:
    """The default application name of this process's connections.

    Args:
        argv: The command line; None for ``sys.argv``.
        main_module: The module ``python -m`` ran; None to find it in ``__main__``.

    Returns:
        ``dbpool:<program>``, cleaned as PostgreSQL keeps it (see ``clean``).
    """
    if argv is None:
        argv = getattr(sys, "argv", None) or []
    if main_module is None:
        main_module = _main_module()
    program = _program(argv, main_module)
    if program in _SERVERS:
        app = _served_module(argv[1:])
        if app:
            program = f"{program} {app}"
    return clean(PREFIX + program)


def clean(name: str) -> str:
    """A name as PostgreSQL (up to 15) keeps it.

    Args:
        name: An application name.

    Returns:
        The name with each byte that is not printable ASCII as ``?``, cut to 63 bytes.
    """
    ascii_ = name.encode("utf-8", "surrogateescape").decode("latin-1")
    return _NOT_PRINTABLE.sub("?", ascii_)[:MAX_LENGTH]


def _main_module() -> str | None:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return name if isinstance(name, str) and name else None


def _program(argv: Sequence[str], main_module: str | None) -> str:
    if main_module:  # python -m pkg: argv[0] is the path of pkg/__main__.py
        name = main_module.removesuffix(".__main__")
    else:
        first = argv[0] if argv else ""
        if first in ("", "-c", "-"):  # interactive, python -c, a script on stdin
            return "python"
        name = re.split(r"[\\/]", first)[-1]
        if name.lower().endswith(".exe"):
            name = name[:-4]
        if name == "__main__.py":  # python path/to/pkg: name the directory
            parts = re.split(r"[\\/]", first)
            name = parts[-2] if len(parts) > 1 and parts[-2] else name
    if name in _JUPYTER:
        return "jupyter"
    return name or "python"


def _served_module(arguments: Sequence[str]) -> str | None:
    """The module of a WSGI/ASGI server's ``module:attribute`` argument, if there is one
    (``shop.wsgi:application`` -> ``shop.wsgi``; an address such as ``0.0.0.0:8000`` is not)."""
    for argument in arguments:
        match = _APP_ARGUMENT.fullmatch(argument)
        if match:
            return match.group(1)
    return None
