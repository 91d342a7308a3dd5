"""`teaprint serve`: an HTTP API and a phone page on the same engine as the daemon.

* `service` - registration into the catalog folder, deletion to
  `deleted/`, thumbnails, all through `Engine`. No HTTP in it.
* `api` - the FastAPI application: routes, auth, errors, the OpenAPI document.
* `guard` - the ASGI request-body limit.
* `run` - `serve()`: checks the bind address against auth, runs uvicorn.
* `static/index.html` - the page at `/` (no build step).
"""

from __future__ import annotations

__all__ = ["serve"]


def serve(*args, **kwargs):  # pragma: no cover - thin re-export, keeps imports lazy
    from pipeline.server.run import serve as _serve

    return _serve(*args, **kwargs)
