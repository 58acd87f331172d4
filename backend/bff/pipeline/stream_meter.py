"""Reads the streams LiteLLM relays, as they are relayed.

A meter sees every server-sent event once, on its way to the client: what content was
delivered (for an estimate when the stream is cut), whether the answer finished,
LiteLLM's usage (with its cost), and error events, which it rewrites into the
gateway's error shape. Everything else passes unchanged; only an incomplete event is
held back until its end arrives, and each event is sent on by itself. Chat and legacy completions stream `choices` deltas
with a last usage chunk; the Responses API streams typed events ending with
`response.completed`, which carries the usage; speech streams audio bytes, unmetered.
"""

import json
from abc import ABC, abstractmethod
from typing import Any

from bff.errors import ApiError
from bff.upstream.errors import error_from_stream_event, stream_error_event

EVENT_END = b"\n\n"
DATA = b"data: "


class SseMeter(ABC):
    """Splits server-sent events and rewrites LiteLLM's error events; subclasses read the rest."""

    def __init__(self) -> None:
        self._partial = b""
        self._delivered: list[str] = []
        self._choices_seen: set[int] = set()
        self._choices_finished: set[int] = set()
        self.usage: dict[str, Any] | None = None
        self.error: ApiError | None = None
        self.finished = False  # the answer is complete: nothing but usage can follow
        self.done = False  # saw `data: [DONE]`: the stream's last event

    def delivered_text(self) -> str:
        return "".join(self._delivered)

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete events in `chunk` (after what was held back), each to send on as it is:
        one event per write, so the client sees LiteLLM's chunks as LiteLLM sent them."""
        data = self._partial + chunk if self._partial else chunk
        cut = data.rfind(EVENT_END)
        if cut < 0:
            self._partial = data
            return []
        complete, self._partial = data[:cut], data[cut + 2 :]
        return [self._passed(event) for event in complete.split(EVENT_END)]

    def flush(self) -> list[bytes]:
        """What is left when the upstream ends without a final blank line."""
        rest, self._partial = self._partial.strip(), b""
        return [self._passed(rest)] if rest else []

    def _passed(self, event: bytes) -> bytes:
        replacement = self._read(event)
        return (event if replacement is None else replacement) + EVENT_END

    def _read(self, event: bytes) -> bytes | None:
        """Notes one event; returns its replacement when it must not reach the client as is."""
        for line in event.split(b"\n"):
            if not line.startswith(DATA):
                continue
            payload = line[len(DATA) :].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if isinstance(message.get("error"), dict) or message.get("type") == "error":
                self.error = error_from_stream_event(message.get("error") or message)
                return stream_error_event(self.error).rstrip(b"\n")
            self._note(message)
        return None

    @abstractmethod
    def _note(self, message: dict[str, Any]) -> None:
        """Reads one event's JSON."""


class ChatMeter(SseMeter):
    """Chat and legacy completions: `choices` deltas, usage in a last chunk (`include_usage`)."""

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
            if isinstance(choice.get("text"), str):  # legacy completions
                self._delivered.append(choice["text"])
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                self._collect(delta)
        self.finished = bool(self._choices_seen) and self._choices_seen <= self._choices_finished

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


class ResponsesMeter(SseMeter):
    """The Responses API: `response.*` events; `response.completed` carries the usage (and its cost)."""

    DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def _note(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "response.output_text.delta" and isinstance(message.get("delta"), str):
            self._delivered.append(message["delta"])
        elif kind == "response.output_item.done":
            self.finished = True
        elif kind in self.DONE:
            self.finished = True
            response = message.get("response") or {}
            usage = response.get("usage") if isinstance(response, dict) else None
            if isinstance(usage, dict) and usage:
                self.usage = usage


class BytesMeter:
    """Audio passes as bytes; its cost is known before the first byte (LiteLLM's header)."""

    usage: dict[str, Any] | None = None
    error: ApiError | None = None
    finished = False
    done = False  # audio has no last event: delivered in full only at its end

    def feed(self, chunk: bytes) -> list[bytes]:
        return [chunk]

    def flush(self) -> list[bytes]:
        return []

    def delivered_text(self) -> str:
        return ""


StreamMeter = ChatMeter | ResponsesMeter | BytesMeter
