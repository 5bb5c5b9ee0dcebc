"""Groq's Batch API in the fake Groq server: files uploaded with purpose `batch`, jobs created on
them, polled, and their output and error files downloaded, as Groq documents them (OpenAI's
shapes). Groq validates a job's input file when the job is created; a bad file fails the job.

A job stays `in_progress` until a test ends it: `complete` (every line answered, some made to
fail with `fail_lines`), `expire` (only the first `answered` lines done), `fail`, `cancel`.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Callable

BATCH_ENDPOINT = "/v1/chat/completions"
MAX_FILE_BYTES = 100 * 1024 * 1024
WINDOWS = ("24h", "48h", "72h", "7d")


class FakeBatchApi:
    def __init__(self, answer: Callable[[dict, int], tuple[int, dict]]):
        """`answer(body, number)`: one line's request answered as the chat endpoint would."""
        self._answer = answer
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}

    # -- HTTP ------------------------------------------------------------------------------------

    def upload(self, content_type: str, raw: bytes) -> tuple[int, dict]:
        fields = _multipart(content_type, raw)
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return 400, _error("a file and purpose=batch are required")
        if len(fields["file"]) > MAX_FILE_BYTES:
            return 400, _error("file is larger than 100 MB")
        with self._lock:
            file_id = f"file_{next(self._ids):04d}"
            self.files[file_id] = fields["file"]
        return 200, {"id": file_id, "object": "file", "bytes": len(fields["file"]), "purpose": "batch",
                     "created_at": int(time.time()), "filename": "batch.jsonl"}

    def create(self, body: dict) -> tuple[int, dict]:
        if body.get("endpoint") != BATCH_ENDPOINT or body.get("completion_window") not in WINDOWS:
            return 400, _error("endpoint must be /v1/chat/completions and completion_window 24h to 7d")
        with self._lock:
            if body.get("input_file_id") not in self.files:
                return 404, _error("input file not found")
            batch_id = f"batch_{next(self._ids):04d}"
            lines = self.files[body["input_file_id"]].decode().splitlines()
            problem = _invalid(lines)
            job = {"id": batch_id, "object": "batch", "endpoint": BATCH_ENDPOINT,
                   "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                   "created_at": int(time.time()), "metadata": body.get("metadata"),
                   "status": "failed" if problem else "in_progress", "output_file_id": None,
                   "error_file_id": None, "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
            if problem:
                job["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": problem}]}
            self.jobs[batch_id] = job
            return 200, dict(job)

    def retrieve(self, batch_id: str) -> tuple[int, dict]:
        with self._lock:
            job = self.jobs.get(batch_id)
            return (200, dict(job)) if job else (404, _error("batch not found"))

    def delete(self, file_id: str) -> tuple[int, dict]:
        with self._lock:
            if self.files.pop(file_id, None) is None:
                return 404, _error("file not found")
        return 200, {"id": file_id, "object": "file", "deleted": True}

    def content(self, file_id: str) -> bytes | None:
        with self._lock:
            return self.files.get(file_id)

    # -- ending a job, for tests ------------------------------------------------------------------

    def complete(self, batch_id: str | None = None, *, fail_lines: tuple[str, ...] = ()) -> None:
        self._end(batch_id, "completed", answered=None, fail_lines=fail_lines)

    def expire(self, batch_id: str | None = None, *, answered: int = 0) -> None:
        self._end(batch_id, "expired", answered=answered)

    def cancel(self, batch_id: str | None = None, *, answered: int = 0) -> None:
        self._end(batch_id, "cancelled", answered=answered)

    def fail(self, batch_id: str | None = None) -> None:
        with self._lock:
            self.jobs[self._one(batch_id)]["status"] = "failed"

    def submitted_lines(self, batch_id: str | None = None) -> list[dict]:
        with self._lock:
            job = self.jobs[self._one(batch_id)]
            return [json.loads(line) for line in self.files[job["input_file_id"]].decode().splitlines()]

    def _end(self, batch_id: str | None, status: str, *, answered: int | None, fail_lines: tuple[str, ...] = ()) -> None:
        with self._lock:
            job = self.jobs[self._one(batch_id)]
            lines = [json.loads(line) for line in self.files[job["input_file_id"]].decode().splitlines()]
            done = lines if answered is None else lines[:answered]
            outputs, errors = [], []
            for number, line in enumerate(done, 1):
                if line["custom_id"] in fail_lines:
                    code, body = 500, _error("internal error while processing the request")
                else:
                    code, body = self._answer(line["body"], number)
                result = {"id": f"batch_req_{number}", "custom_id": line["custom_id"],
                          "response": {"status_code": code, "request_id": f"req_{number}", "body": body},
                          "error": None}
                (outputs if code == 200 else errors).append(json.dumps(result))
            job["output_file_id"] = self._store("\n".join(outputs)) if outputs else None
            job["error_file_id"] = self._store("\n".join(errors)) if errors else None
            job["status"] = status
            job["request_counts"] = {"total": len(lines), "completed": len(outputs), "failed": len(errors)}

    def _store(self, text: str) -> str:
        file_id = f"file_{next(self._ids):04d}"
        self.files[file_id] = (text + "\n").encode()
        return file_id

    def _one(self, batch_id: str | None) -> str:
        if batch_id is not None:
            return batch_id
        [only] = [job_id for job_id, job in self.jobs.items() if job["status"] == "in_progress"]
        return only


def _invalid(lines: list[str]) -> str | None:
    """Why Groq would refuse the input file, as its validation does before any line runs."""
    seen = set()
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except ValueError:
            return f"line {number} is not JSON"
        if item.get("method") != "POST" or item.get("url") != BATCH_ENDPOINT or not isinstance(item.get("body"), dict):
            return f"line {number}: method must be POST, url /v1/chat/completions, and a body given"
        if not item.get("custom_id") or item["custom_id"] in seen:
            return f"line {number}: custom_id missing or repeated"
        seen.add(item["custom_id"])
    return None if lines else "the input file is empty"


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    message = BytesParser(policy=email_policy).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = part.get_payload(decode=True) or b""
    return fields


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error"}}
