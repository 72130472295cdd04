"""The REST client reads the API's errors: RFC 9457 problems, the older error object, or raw text."""

from __future__ import annotations

import json

from pipeline.rest_client import _api_error


def test_a_problem_document_gives_its_code_detail_and_details() -> None:
    body = {"type": "about:blank", "title": "Unprocessable Content", "status": 422, "detail": "4 GPUs over quota",
            "code": "quota-exceeded", "details": {"reason": "quota-exceeded"},
            "error": {"code": "old", "message": "old message"}}
    error = _api_error(422, json.dumps(body).encode())
    assert (error.status, error.code, error.message, error.details) == (
        422, "quota-exceeded", "4 GPUs over quota", {"reason": "quota-exceeded"})


def test_the_older_error_object_and_raw_text_still_read() -> None:
    legacy = _api_error(404, json.dumps({"error": {"code": "not-found", "message": "no such tenant"}}).encode())
    assert (legacy.code, legacy.message, legacy.details) == ("not-found", "no such tenant", {})
    raw = _api_error(502, b"<html>bad gateway</html>")
    assert (raw.code, raw.message) == ("http-502", "<html>bad gateway</html>")
