"""A local fake of Groq's OpenAI-compatible chat completions API, served over real HTTP on
127.0.0.1, so the real `groq` SDK can be pointed at it (`base_url`).

It answers `POST /openai/v1/chat/completions` with an analysis derived from the transcript in the
request, or misbehaves on demand (`respond`): invalid JSON, JSON of the wrong shape, 429 with
Retry-After, 500. Keys in `rejected_keys` get 401; `latency` makes every answer slow. Like Groq it
refuses (400) a strict schema on a model without constrained decoding, a strict schema that leaves
a property optional, and a `reasoning_effort` the model does not take; it keeps rate limits
(`fakes/groq_limits.py`) and answers `GET /openai/v1/models/{id}`. Every request is kept
(`requests`) with its body and Authorization header, for assertions.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote

from fakes.groq_answers import (answer_batch_line, answer_content, chat_completion, form_error, sent_text,
                                stages_asked, tokens, transcript_of)
from fakes.groq_batches import FakeBatchApi
from fakes.groq_limits import RateLimits
from fakes.local_server import LocalServer, QuietHandler

COMPLETIONS_PATH = "/openai/v1/chat/completions"
MODELS_PATH = "/openai/v1/models/"
FILES_PATH = "/openai/v1/files"
BATCHES_PATH = "/openai/v1/batches"
BEHAVIOURS = ("analysis", "invalid_json", "wrong_shape", "rate_limited", "server_error",
              "json_validate_failed", "bad_request")


@dataclass(frozen=True)
class GroqRequest:
    body: dict
    authorization: str
    status: int

    @property
    def api_key(self) -> str:
        return self.authorization.removeprefix("Bearer ")

    @property
    def transcript(self) -> str:
        return transcript_of(self.body)

    @property
    def sent_text(self) -> str:
        return sent_text(self.body)


class FakeGroq(LocalServer):
    thread_name = "fake-groq"

    def __init__(self, *, behaviour: str = "analysis", latency: float = 0.0, retry_after: float = 1.0,
                 rejected_keys: tuple[str, ...] = (), extra: dict | None = None,
                 retired_models: tuple[str, ...] = (), tokens_per_minute: int = 10_000_000,
                 requests_per_day: int = 10_000_000, rate_window_seconds: float = 60.0):
        """`retired_models`: decommissioned, answered 404 `model_not_found` as Groq does.
        The limits default to more than any test sends; `rate_window_seconds` shortens the minute."""
        self._check(behaviour)
        self.limits = RateLimits(tokens_per_minute, requests_per_day, rate_window_seconds)
        self.batch_api = FakeBatchApi(lambda body, number: answer_batch_line(body, self.extra, number))
        self.retired_models = set(retired_models)
        self._on_request: deque[Callable[[], None]] = deque()
        self.latency = latency
        self.retry_after = retry_after
        self.rejected_keys = set(rejected_keys)
        self.extra = dict(extra or {})  # added to every valid analysis (configured extra fields)
        self.requests: list[GroqRequest] = []
        self.in_flight = self.max_in_flight = 0  # completion requests being answered at once
        super().__init__()
        self._behaviour = behaviour
        self._scripted: deque[str] = deque()
        self._lock = threading.Lock()

    # -- behaviour, for tests -------------------------------------------------------------------

    def respond(self, behaviour: str, *, times: int | None = None) -> None:
        """Answer the next `times` requests with `behaviour`, then go back to the standing one;
        without `times`, make it the standing behaviour."""
        self._check(behaviour)
        with self._lock:
            if times is None:
                self._behaviour = behaviour
                self._scripted.clear()
            else:
                self._scripted.extend([behaviour] * times)

    def on_request(self, action: Callable[[], None]) -> None:
        """Run `action` once, when the next request has arrived and before it is answered: what
        happens while a request is in flight, without racing a timer against a delay."""
        with self._lock:
            self._on_request.append(action)

    def clear_request_actions(self) -> None:
        """Drop the `on_request` actions still waiting."""
        with self._lock:
            self._on_request.clear()

    def _take_request_action(self) -> Callable[[], None] | None:
        with self._lock:
            return self._on_request.popleft() if self._on_request else None

    def recorded(self) -> list[GroqRequest]:
        with self._lock:
            return list(self.requests)

    def statuses(self) -> list[int]:
        return [request.status for request in self.recorded()]

    def tokens_sent(self) -> int:
        return sum(tokens(request.sent_text) for request in self.recorded())

    @staticmethod
    def _check(behaviour: str) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, not {behaviour!r}")

    def _next_behaviour(self) -> str:
        with self._lock:
            return self._scripted.popleft() if self._scripted else self._behaviour

    def _log(self, request: GroqRequest) -> int:
        with self._lock:
            self.requests.append(request)
            return len(self.requests)


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        fake: FakeGroq = self.server.fake
        if self.path.startswith(BATCHES_PATH + "/"):
            return self._send(*fake.batch_api.retrieve(unquote(self.path[len(BATCHES_PATH) + 1:])))
        if self.path.startswith(FILES_PATH + "/") and self.path.endswith("/content"):
            content = fake.batch_api.content(unquote(self.path[len(FILES_PATH) + 1:-len("/content")]))
            if content is None:
                return self._send(404, {"error": {"message": "file not found", "type": "invalid_request_error"}})
            return self._send_bytes(200, content, "application/octet-stream")
        if not self.path.startswith(MODELS_PATH):
            return self._send(404, {"error": {"message": "Unknown request URL", "type": "invalid_request_error"}})
        model = unquote(self.path[len(MODELS_PATH):])
        if model in fake.retired_models:
            return self._send(404, {"error": {"message": f"The model `{model}` does not exist or you do not have access to it.",
                                              "type": "invalid_request_error", "code": "model_not_found"}})
        self._send(200, {"id": model, "object": "model", "created": 0, "owned_by": "fake", "active": True})

    def do_DELETE(self) -> None:
        fake: FakeGroq = self.server.fake
        if not self.path.startswith(FILES_PATH + "/"):
            return self._send(404, {"error": {"message": "Unknown request URL", "type": "invalid_request_error"}})
        self._send(*fake.batch_api.delete(unquote(self.path[len(FILES_PATH) + 1:])))

    def do_POST(self) -> None:
        fake: FakeGroq = self.server.fake
        with fake._lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._answer(fake)
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer(self, fake: "FakeGroq") -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        authorization = self.headers.get("Authorization", "")
        if self.path in (FILES_PATH, BATCHES_PATH) and authorization.removeprefix("Bearer ") in fake.rejected_keys:
            return self._error(fake, {}, authorization, 401, "Invalid API Key", code="invalid_api_key")
        if self.path == FILES_PATH:
            return self._send(*fake.batch_api.upload(self.headers.get("Content-Type", ""), raw))
        if self.path == BATCHES_PATH:
            try:
                return self._send(*fake.batch_api.create(json.loads(raw)))
            except ValueError:
                return self._error(fake, {}, authorization, 400, "Request body is not JSON")
        if self.path != COMPLETIONS_PATH:
            return self._error(fake, {}, authorization, 404, "Unknown request URL")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(fake, {}, authorization, 400, "Request body is not JSON")
        if (action := fake._take_request_action()) is not None:
            action()
        if fake.latency:
            time.sleep(fake.latency)
        if authorization.removeprefix("Bearer ") in fake.rejected_keys:
            return self._error(fake, body, authorization, 401, "Invalid API Key", code="invalid_api_key")
        if body.get("model") in fake.retired_models:
            return self._error(fake, body, authorization, 404,
                               f"The model `{body['model']}` has been decommissioned or does not exist.",
                               code="model_not_found")
        if (refusal := form_error(body)) is not None:
            return self._error(fake, body, authorization, 400, refusal, code="invalid_request_error")
        behaviour = fake._next_behaviour()
        if behaviour == "rate_limited":
            wait = f"{fake.retry_after:g}"
            return self._error(fake, body, authorization, 429, "Rate limit reached",
                               code="rate_limit_exceeded",
                               headers={"Retry-After": wait, "x-ratelimit-remaining-requests": "0",
                                        "x-ratelimit-reset-requests": f"{wait}s"})
        if behaviour == "server_error":
            return self._error(fake, body, authorization, 500, "Internal Server Error")
        if behaviour == "json_validate_failed":
            return self._error(fake, body, authorization, 400,
                               "Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for more details.",
                               code="json_validate_failed", failed_generation='{"tag": "Interested", "summ')
        if behaviour == "bad_request":
            return self._error(fake, body, authorization, 400, "'messages.0' : unsupported parameter",
                               code="invalid_request_error")
        content = answer_content(behaviour, GroqRequest(body, authorization, 200).transcript, fake.extra,
                                 stages_asked(body))
        prompt_tokens = tokens(GroqRequest(body, authorization, 200).sent_text)
        limit_headers, refusal = fake.limits.take(body.get("model", ""), prompt_tokens + tokens(content))
        if refusal is not None:
            fake._log(GroqRequest(body, authorization, 429))
            return self._send(429, refusal, limit_headers)
        number = fake._log(GroqRequest(body, authorization, 200))
        self._send(200, chat_completion(body, content, prompt_tokens, number), limit_headers)

    def _error(self, fake: FakeGroq, body: dict, authorization: str, status: int, message: str, *,
               code: str | None = None, headers: dict[str, str] | None = None, **details) -> None:
        fake._log(GroqRequest(body, authorization, status))
        error = {"message": message, "type": "invalid_request_error", "code": code, **details}
        self._send(status, {"error": error}, headers)

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


FakeGroq.handler = _Handler
