"""``saga ui``: a web dashboard over the saga log, server-rendered, on SQLite or PostgreSQL.

- :mod:`saga_cli.ui.app`: the application factory and what every page shares;
- :mod:`saga_cli.ui.pages`: the pages (executions, one execution, stats,
  the stuck queue, workers), each over one of the CLI's read models;
- :mod:`saga_cli.ui.actions`: resume, compensate, cancel and resolve, with
  signing in (mounted only when actions are allowed);
- :mod:`saga_cli.ui.access`: the token, the session cookie and CSRF;
- :mod:`saga_cli.ui.svg`: the charts;
- :mod:`saga_cli.ui.server`: listening on a socket and running uvicorn.

Imported only by the ``saga ui`` command (FastAPI and Jinja2 are not light).
"""

from __future__ import annotations

from saga_cli.ui.access import Access
from saga_cli.ui.app import create_app

__all__ = ["Access", "create_app"]
