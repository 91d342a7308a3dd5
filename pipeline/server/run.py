"""`teaprint serve`: check the address against auth, load the engine, run uvicorn.

uvicorn is the production ASGI server (one process: the model is loaded once
and requests share it through the thread pool; see `service` on thread-safety).
It handles SIGTERM/SIGINT by finishing requests in flight and exiting 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

import structlog

from pipeline.config import Config, ConfigError

log = structlog.get_logger("teaprint.http")

TOKEN_ENV = "TEAPRINT_TOKEN"
MIN_TOKEN_CHARS = 16


def resolve_token(config: Config) -> str | None:
    """The bearer token: `TEAPRINT_TOKEN` if set, else `http.token`; None for none."""
    token = os.environ.get(TOKEN_ENV) or config.http.token
    if token is None or token == "":
        return None
    if len(token) < MIN_TOKEN_CHARS or token != token.strip():
        raise ConfigError(f"the HTTP token must be at least {MIN_TOKEN_CHARS} characters without surrounding spaces "
                          f"(http.token or {TOKEN_ENV}); e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback address."""
    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(address)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, exiting 0 after a graceful SIGTERM/SIGINT stop (like the daemon).

        Recent uvicorn re-raises the caught signal after shutting down, which
        makes the process die "by signal" instead of exiting 0.
        """

        def handle_exit(self, sig, frame):  # type: ignore[no-untyped-def]
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return Server


def serve(root: Path, config: Config, port: int | None = None, host: str | None = None) -> int:
    import uvicorn

    from pipeline.server.api import create_app
    from pipeline.server.guard import BodyLimit
    from pipeline.server.localise import LocalisedErrors
    from pipeline.server.service import TeaprintService

    host = host or config.http.host
    port = config.http.port if port is None else port
    token = resolve_token(config)
    if token is None and not is_loopback(host):
        raise ConfigError(f"refusing to serve on {host} without a token: set http.token or {TOKEN_ENV}, "
                          f"or bind to 127.0.0.1 (http.host)")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is not in 0-65535")
    service = TeaprintService.load(config, Path(root))
    service.warm_up()
    app = create_app(service, config, token)
    limit = int(config.http.max_upload_mb * 1_000_000)
    asgi = LocalisedErrors(BodyLimit(app, limit, f"{config.http.max_upload_mb:g} MB"))
    _Server = _server_class()
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [logging.StreamHandler(sys.stderr)]
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    server = _Server(uvicorn.Config(
        asgi, log_config=None, access_log=False, server_header=False, proxy_headers=False,
        timeout_keep_alive=5, timeout_graceful_shutdown=10, lifespan="off",
    ))
    shown = f"[{host}]" if ":" in host else host
    log.info("serving", url=f"http://{shown}:{actual}/", host=host, port=actual, auth=token is not None,
             root=str(service.root), entries=len(service.engine.snapshot()), model=service.engine.model_info.id)
    server.run(sockets=[sock])
    log.info("stopped", port=actual)
    return 0
