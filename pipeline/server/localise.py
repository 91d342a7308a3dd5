"""ASGI wrapper that says JSON error messages in the language the client asks for.

It sits outside the whole application (and outside `BodyLimit`, whose 413 it
translates too): a response with status >= 400 and a JSON body is held,
its `message` fields rewritten by `pipeline.i18n.localise_error` for the
request's `Accept-Language`, and sent with a corrected length. The `error`
codes and every other field stay as they were; successful responses pass
through untouched and unbuffered. Every response says `Vary: Accept-Language`.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from pipeline.i18n import DEFAULT_LANGUAGE, localise_error, pick_language
from pipeline.results import dumps

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class LocalisedErrors:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"accept-language"), None)
        language = pick_language(header)
        held: dict[str, Any] = {"start": None, "body": []}

        async def localising_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"vary" and b"accept-language" in v.lower() for k, v in headers):
                    headers.append((b"vary", b"Accept-Language"))
                message = {**message, "headers": headers}
                if language != DEFAULT_LANGUAGE and message["status"] >= 400 and _is_json(headers):
                    held["start"] = message
                    return
            elif message["type"] == "http.response.body" and held["start"] is not None:
                held["body"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                start, body = held["start"], _rewrite(b"".join(held["body"]), language)
                held["start"] = None
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode()),
                                                 (b"content-language", language.encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, localising_send)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.split(b";")[0].strip() == b"application/json" for k, v in headers)


def _rewrite(body: bytes, language: str) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict):
        return body
    return dumps(localise_error(data, language)).encode("utf-8")  # UTF-8 as is; a non-UTF-8 name stays escaped
