"""Reads the server-sent events of a LiteLLM chat stream as they are relayed.

The meter sees every event once, on its way to the client: what content was
delivered (for an estimate when the stream is cut), whether every choice finished,
LiteLLM's usage (with its cost, `include_cost_in_streaming_usage`), and error events,
which it rewrites into the gateway's error shape. Everything else passes unchanged;
only an incomplete event is held back until its end arrives.
"""

import json
from typing import Any

from bff.errors import ApiError
from bff.upstream.errors import error_from_stream_event, stream_error_event

EVENT_END = b"\n\n"
DATA = b"data: "


class StreamMeter:
    def __init__(self) -> None:
        self._partial = b""
        self._delivered: list[str] = []
        self._choices_seen: set[int] = set()
        self._choices_finished: set[int] = set()
        self.usage: dict[str, Any] | None = None
        self.error: ApiError | None = None

    @property
    def finished(self) -> bool:
        """Every choice that started has a finish_reason: nothing but usage can follow."""
        return bool(self._choices_seen) and self._choices_seen <= self._choices_finished

    def delivered_text(self) -> str:
        return "".join(self._delivered)

    def feed(self, chunk: bytes) -> bytes:
        """The complete events in `chunk` (plus what was held back), to send on now."""
        data = self._partial + chunk if self._partial else chunk
        cut = data.rfind(EVENT_END)
        if cut < 0:
            self._partial = data
            return b""
        complete, self._partial = data[: cut + 2], data[cut + 2 :]
        rewritten = False
        events = complete.split(EVENT_END)
        for index, event in enumerate(events[:-1]):
            replacement = self._read(event)
            if replacement is not None:
                events[index] = replacement
                rewritten = True
        return EVENT_END.join(events) if rewritten else complete

    def flush(self) -> bytes:
        """What is left when the upstream ends without a final blank line."""
        rest, self._partial = self._partial, b""
        if rest.strip():
            replacement = self._read(rest.strip())
            return (replacement if replacement is not None else rest.strip()) + EVENT_END
        return b""

    def _read(self, event: bytes) -> bytes | None:
        """Notes one event; returns its replacement when it must not reach the client as is."""
        for line in event.split(b"\n"):
            if not line.startswith(DATA):
                continue
            payload = line[len(DATA) :].strip()
            if payload == b"[DONE]":
                continue
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "error" in message:
                self.error = error_from_stream_event(message["error"])
                return stream_error_event(self.error).rstrip(b"\n")
            self._note(message)
        return None

    def _note(self, message: dict[str, Any]) -> None:
        usage = message.get("usage")
        if isinstance(usage, dict) and usage:
            self.usage = usage
        for choice in message.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            self._choices_seen.add(index)
            if choice.get("finish_reason"):
                self._choices_finished.add(index)
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                self._collect(delta)

    def _collect(self, delta: dict[str, Any]) -> None:
        for key in ("content", "reasoning_content"):
            if isinstance(delta.get(key), str):
                self._delivered.append(delta[key])
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for key in ("name", "arguments"):
                    if isinstance(function.get(key), str):
                        self._delivered.append(function[key])
