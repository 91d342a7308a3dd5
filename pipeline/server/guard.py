"""ASGI wrapper that refuses request bodies above a size limit with 413.

It sits outside the whole application, so the limit holds before any routing
or multipart parsing: a declared `Content-Length` above the limit is refused
without reading the body; a body that turns out larger (chunked, or a lying
header) is cut off at the limit and answered 413 whatever the inner app was
about to say.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimit:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit_bytes: int, limit_text: str) -> None:
        self.app = app
        self.limit = limit_bytes
        self.limit_text = limit_text

    def _body(self) -> bytes:
        return json.dumps({"error": "too_large_request",
                           "message": f"request body is above the limit of {self.limit_text} (http.max_upload_mb)"}).encode()

    async def _refuse(self, send: Send) -> None:
        body = self._body()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await self._refuse(send)
                    return
        state = {"seen": 0, "over": False, "started": False, "refused": False}

        async def limited_receive() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                if not state["started"] and not state["refused"]:
                    state["refused"] = True
                    await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"] and not state["refused"]:
            await self._refuse(send)
