"""Google Cloud Translation (v2 REST) against a local fake of its HTTP API: a real HTTP server on a free port."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from livedub.dubbing.translate import GoogleTranslator, TranslationError

pytestmark = pytest.mark.unit

KEY = "test-key"
WORDS = {("en", "fr", "Good morning. Where is the station?"): "Bonjour. Où est la gare ?"}


@dataclass
class FakeGoogle:
    """Answers like translation.googleapis.com/language/translate/v2, or with `status` when set."""

    url: str = ""
    status: int = 200
    body: Any = None  # a raw answer instead of the translation
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    state = FakeGoogle()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"path": urlparse(self.path).path, "query": query, "json": payload})
            if state.status != 200:
                return self._answer(state.status, {"error": {"code": state.status, "message": "nope"}})
            if query.get("key") != [KEY]:
                return self._answer(400, {"error": {"code": 400, "message": "API key not valid."}})
            if state.body is not None:
                return self._answer(200, state.body)
            text = WORDS.get((payload["source"], payload["target"], payload["q"]), payload["q"].upper())
            self._answer(200, {"data": {"translations": [{"translatedText": text}]}})

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/language/translate/v2"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_posts_the_text_languages_and_key_and_returns_the_translation(fake: FakeGoogle) -> None:
    translator = GoogleTranslator(KEY, fake.url)
    assert translator.translate("Good morning. Where is the station?", "en", "fr") == "Bonjour. Où est la gare ?"
    (request,) = fake.requests
    assert request["path"] == "/language/translate/v2"
    assert request["query"] == {"key": [KEY]}
    assert request["json"] == {
        "q": "Good morning. Where is the station?",
        "source": "en",
        "target": "fr",
        "format": "text",
    }


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (403, False), (429, True), (500, True), (503, True)])
def test_http_errors_map_to_retryable_or_not(fake: FakeGoogle, status: int, retryable: bool) -> None:
    fake.status = status
    with pytest.raises(TranslationError) as info:
        GoogleTranslator(KEY, fake.url).translate("Hello.", "en", "it")
    assert info.value.retryable is retryable
    assert str(status) in str(info.value)


def test_a_wrong_key_is_not_retried(fake: FakeGoogle) -> None:
    with pytest.raises(TranslationError, match="400") as info:
        GoogleTranslator("wrong", fake.url).translate("Hello.", "en", "es")
    assert not info.value.retryable


def test_unexpected_body_and_unreachable_server(fake: FakeGoogle) -> None:
    fake.body = {"translations": []}
    with pytest.raises(TranslationError, match="unexpected body"):
        GoogleTranslator(KEY, fake.url).translate("Hello.", "en", "es")
    closed = fake.url.replace(fake.url.split(":")[2].split("/")[0], "1")  # port 1: nothing listens
    with pytest.raises(TranslationError) as info:
        GoogleTranslator(KEY, closed, timeout_s=2).translate("Hello.", "en", "es")
    assert info.value.retryable


def test_empty_text_and_unsupported_pairs_make_no_request(fake: FakeGoogle) -> None:
    translator = GoogleTranslator(KEY, fake.url)
    assert translator.translate("   ", "en", "fr") == ""
    with pytest.raises(TranslationError, match="unsupported"):
        translator.translate("Hello.", "en", "xx")
    with pytest.raises(TranslationError, match="unsupported"):
        translator.translate("Hello.", "en", "en")
    assert fake.requests == []
    assert translator.supports("fr", "it") and not translator.supports("en", "xx")


def test_a_key_is_required() -> None:
    with pytest.raises(ValueError, match="GOOGLE_API_KEY"):
        GoogleTranslator("")
