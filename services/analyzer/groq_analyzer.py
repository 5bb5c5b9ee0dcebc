"""One call's transcript analyzed by Groq: one request, retried only for transient failures,
the answer validated before anyone trusts it."""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import groq
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from models.pipeline import Pipeline
from services.analyzer.pacing import Deadline, DeadlineExceeded, RatePacer, retry_after_seconds
from services.analyzer.prompt import CHARS_PER_TOKEN, completion_request, stage_names
from services.analyzer.schema import Analysis, InvalidAnswer, Usage, parse_answer
from utils.config import Settings
from utils.logging import Listeners

log = logging.getLogger(__name__)

# Worth another request: the same request may well succeed a moment later.
TRANSIENT_ERRORS = (groq.RateLimitError, groq.InternalServerError, groq.APIConnectionError)
# Retried to the end, these say Groq is down rather than that the call is at fault; a timeout is
# the exception (a long transcript can cause it), and stays the call's failure.
SERVICE_DOWN = (groq.InternalServerError, groq.APIConnectionError)
# 400 codes that come from the call (its transcript, or the answer generated for it) rather than
# from the form every request shares.
CALL_FAULTS = frozenset({"json_validate_failed", "context_length_exceeded"})
# For errors other than rate limits, which are waited out until the batch deadline instead.
MAX_REQUESTS_PER_CALL = 4
# A 429 saying "retry after 0 s" must not turn into a busy loop against the API.
MIN_RATE_LIMIT_WAIT = 0.05
# When Groq gives no hint how long to wait (5xx, dropped connection).
_BACKOFF = wait_exponential(multiplier=0.25, max=4)


class LlmUnavailable(Exception):
    """The LLM cannot be used now for a reason that is not the call's: no key accepted, the model
    gone, Groq down, or the run's request budget spent. The call goes back to the queue."""


class BudgetSpent(LlmUnavailable):
    """The run's LLM request budget (LLM_REQUEST_BUDGET) is spent."""


class LlmFailure(Exception):
    """The attempt failed for good; `usage` counts tokens spent on an answer that was unusable."""

    def __init__(self, message: str, usage: Usage = Usage()):
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class LlmAnswer:
    analysis: Analysis
    usage: Usage
    model: str


def read_completion(body: dict, settings: Settings, pipeline: Pipeline | None) -> LlmAnswer:
    """A chat completion (the synchronous lane's, or a Batch API line's `body`) validated as an
    analysis; LlmFailure (with the tokens it cost) when it is not one of the expected shape."""
    model = body.get("model") or settings.groq_model
    usage = _usage(body)
    choices = body.get("choices") or [{}]
    try:
        analysis = parse_answer((choices[0].get("message") or {}).get("content"), settings.analysis_tags,
                                settings.analysis_extra_fields, stage_names(pipeline))
    except InvalidAnswer as exc:
        raise LlmFailure(f"{model}: invalid answer: {exc}", usage) from exc
    return LlmAnswer(analysis, usage, model)


@dataclass(eq=False)
class _Key:
    """One API key: its client, and the pacing of its organisation's limits (kept across runs)."""
    client: groq.Groq
    pacer: RatePacer


class GroqAnalyzer:
    def __init__(self, settings: Settings):
        self._settings = settings
        self.model = settings.groq_model
        self._all_keys = [
            # max_retries=0: retries are ours (tenacity), bounded by the batch deadline.
            _Key(groq.Groq(api_key=key, base_url=settings.groq_base_url, max_retries=0,
                           timeout=settings.llm_timeout_seconds), RatePacer())
            for key in settings.groq_api_keys
        ]
        self.outcomes = Listeners("request_listener_failed")  # each request's outcome, for the metrics
        self._lock = threading.Lock()
        self.begin_run(settings.llm_requests_per_run)

    def begin_run(self, request_budget: int) -> None:
        """Every key gets another chance each run (a rejected key may have been renewed), and the
        run its own request budget."""
        with self._lock:
            self._keys = list(self._all_keys)  # in rotation, to spread the rate limit
            self._budget = request_budget
            self._requests = 0

    def _next_key(self) -> _Key | None:
        """The next key for a request, which counts in the run's budget (every HTTP request does,
        retries included: the SDK's own retries are off); None when every key was rejected."""
        with self._lock:
            if not self._keys:
                return None
            if self._requests >= self._budget:
                raise BudgetSpent(f"the run's budget of {self._budget} LLM requests is spent")
            key = self._keys[self._requests % len(self._keys)]
            self._requests += 1
            return key

    def check_model(self) -> str | None:
        """Why the configured model cannot be used, when Groq says it does not exist; None when it
        exists or Groq cannot tell now (the runs will say more)."""
        try:
            self._all_keys[0].client.models.retrieve(self.model, timeout=self._settings.llm_timeout_seconds)
        except groq.NotFoundError:
            return (f"GROQ_MODEL {self.model} does not exist on Groq (404): calls stay queued until "
                    "it is set to a current model such as openai/gpt-oss-20b")
        except groq.APIError as exc:
            log.info("could not check GROQ_MODEL %s: %s", self.model, _describe(exc))
        return None

    def analyze(self, transcript: str, deadline: Deadline, pipeline: Pipeline | None = None) -> LlmAnswer:
        """Raises LlmFailure (a finished, failed attempt), LlmUnavailable (not attempted for a
        reason that is not the call's) or DeadlineExceeded (cut off). `pipeline`: the contact's,
        whose stages the answer recommends one of."""
        request = completion_request(transcript, self._settings, pipeline)
        retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            wait=_server_hint_or_backoff,
            stop=_out_of_attempts,
            sleep=deadline.sleep,
            reraise=True,
            before_sleep=lambda state: self._count_transient(state.outcome.exception(), "retried"),
        )
        try:
            body = retrying(self._request, request, deadline)
        except groq.APIError as exc:
            self._count_transient(exc, "error")
            requests = retrying.statistics.get("attempt_number", 1)
            reason = f"{self.model}: {_describe(exc)} (after {requests} request(s))"
            if isinstance(exc, SERVICE_DOWN) and not isinstance(exc, groq.APITimeoutError):
                raise LlmUnavailable(f"Groq is unavailable: {reason}") from exc
            raise LlmFailure(reason) from exc
        return read_completion(body, self._settings, pipeline)

    def _request(self, request: dict, deadline: Deadline) -> dict:
        # What the messages will count for, before any answer says so.
        characters = sum(len(message["content"]) for message in request["messages"])
        prompt_tokens = math.ceil(characters / CHARS_PER_TOKEN)
        while (key := self._next_key()) is not None:
            reserved = key.pacer.acquire(prompt_tokens, deadline)
            headers = body = None
            try:
                timeout = deadline.request_timeout(self._settings.llm_timeout_seconds)
                raw = key.client.chat.completions.with_raw_response.create(**request, timeout=timeout)
                headers = raw.headers
                body = raw.parse().model_dump()
                self.outcomes("ok")
                return body
            except groq.APIStatusError as exc:
                headers = exc.response.headers
                if isinstance(exc, groq.RateLimitError):
                    self.outcomes("429")
                elif not isinstance(exc, TRANSIENT_ERRORS):
                    self.outcomes("error")  # never retried: a refused key, a missing model, a bad request
                self._refuse(key, exc)
            except groq.APITimeoutError as exc:
                # The timeout was cut to the time left: the deadline, not Groq, ended it.
                if deadline.reached:
                    self.outcomes("error")
                    raise DeadlineExceeded("the batch deadline passed during the request") from exc
                raise
            finally:
                key.pacer.settle(reserved, headers, _usage(body).completion_tokens if body else None)
        raise LlmUnavailable(f"{self.model}: every Groq API key was rejected (401)")

    def _count_transient(self, error: BaseException | None, outcome: str) -> None:
        """A transient failure (5xx, timeout, connection) is `retried` or, given up, an `error`; a
        429 was counted when it came, the others when they came (never retried)."""
        if isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, groq.RateLimitError):
            self.outcomes(outcome)

    def _refuse(self, key: _Key, error: groq.APIStatusError) -> None:
        """Sort a refusal: a rejected key is set aside (the next key is tried), a rate limit
        pauses every request of the key, and what no call can get past ends the run's use of the
        LLM; anything else is raised for the retry loop or as this call's failure."""
        if isinstance(error, groq.AuthenticationError):
            with self._lock:
                if key in self._keys:
                    self._keys.remove(key)
                left = len(self._keys)
            log.warning("a Groq API key was rejected (401); set aside for this run, %d left", left)
            return
        if isinstance(error, groq.RateLimitError):
            key.pacer.pause(max(retry_after_seconds(error.response.headers) or 0.0, MIN_RATE_LIMIT_WAIT))
        elif isinstance(error, groq.NotFoundError):
            raise LlmUnavailable(f"model {self.model} is not available (HTTP 404); set GROQ_MODEL") from error
        elif isinstance(error, groq.BadRequestError) and error_code(error.body) not in CALL_FAULTS:
            # The request's form (model, answer format, parameters), which every call shares.
            raise LlmUnavailable(f"{self.model}: Groq refused the request ({error_code(error.body) or 'HTTP 400'}); "
                                 "check GROQ_MODEL, GROQ_ANSWER_FORMAT and GROQ_REASONING_EFFORT") from error
        raise error


def _out_of_attempts(retry_state: RetryCallState) -> bool:
    # A rate limit passes; waiting it out is bounded by the deadline (Deadline.sleep), and a call
    # failed for it would be processed without its LLM analysis for good.
    if isinstance(retry_state.outcome.exception(), groq.RateLimitError):
        return False
    return retry_state.attempt_number >= MAX_REQUESTS_PER_CALL


def _server_hint_or_backoff(retry_state: RetryCallState) -> float:
    error = retry_state.outcome.exception()
    if isinstance(error, groq.APIStatusError):
        hinted = retry_after_seconds(error.response.headers)
        if hinted is not None:
            return max(hinted, MIN_RATE_LIMIT_WAIT) if isinstance(error, groq.RateLimitError) else hinted
    return _BACKOFF(retry_state)


def _describe(error: groq.APIError) -> str:
    # Not the error body: it is Groq's text, and a 400 may quote the request.
    if isinstance(error, groq.APIStatusError):
        return f"{type(error).__name__} (HTTP {error.status_code})"
    return f"{type(error).__name__}: {error.message}"


def error_code(body: object) -> str | None:
    """The `code` of a Groq error body: `{"error": {"code": ...}}`, or the error object itself."""
    details = body.get("error", body) if isinstance(body, dict) else None
    code = details.get("code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else None


def _usage(body: dict) -> Usage:
    usage = body.get("usage") or {}
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
