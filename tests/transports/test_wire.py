"""core_request and httpx_response build what httpcore's and httpx's constructors build."""

from __future__ import annotations

import httpcore
import httpx
import pytest

from pymesh.transports import _wire


def _args(extensions: dict[str, object]) -> tuple[object, ...]:
    return (
        b"POST",
        b"http",
        b"127.0.0.1",
        8080,
        b"/p?q=1",
        [(b"host", b"svc"), (b"content-length", b"2")],
        [b"hi"],
        extensions,
    )


def test_fast_path_is_active_and_equal_to_the_constructor() -> None:
    # This httpcore passes the import-time check, so the fast path is the one in use.
    assert _wire.core_request is _wire._direct
    fast = _wire.core_request(*_args({"timeout": {"read": 1.0}}))  # type: ignore[arg-type]
    slow = httpcore.Request(
        b"POST",
        httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=8080, target=b"/p?q=1"),
        headers=[(b"host", b"svc"), (b"content-length", b"2")],
        content=[b"hi"],
        extensions={"timeout": {"read": 1.0}},
    )
    assert vars(fast).keys() == vars(slow).keys()
    assert fast.url == slow.url and fast.url.origin == slow.url.origin
    assert (fast.method, fast.headers, fast.extensions) == (
        slow.method,
        slow.headers,
        slow.extensions,
    )


def test_target_extension_goes_through_httpcore() -> None:
    req = _wire.core_request(*_args({"target": b"/override"}))  # type: ignore[arg-type]
    assert req.url.target == b"/override"


def test_response_fast_path_is_active_and_behaves_as_the_constructor() -> None:
    # This httpx passes the import-time check, so the fast path is the one in use.
    assert _wire.httpx_response is _wire._direct_response
    request = httpx.Request("GET", "http://svc/p")
    raw = [(b"Content-Type", b"text/plain; charset=latin-1"), (b"X-A", b"1"), (b"x-a", b"2")]
    extensions = {"http_version": b"HTTP/1.1"}
    fast = _wire.httpx_response(200, raw, httpx.ByteStream(b"\xe9t\xe9"), extensions, request)
    slow = httpx.Response(
        200,
        headers=raw,
        stream=httpx.ByteStream(b"\xe9t\xe9"),
        extensions=extensions,
        request=request,
    )
    assert vars(fast).keys() == vars(slow).keys()
    assert fast.headers.raw == slow.headers.raw == raw
    assert fast.headers.get_list("x-a") == slow.headers.get_list("x-a") == ["1", "2"]
    assert fast.extensions == extensions and fast.extensions is not extensions
    assert (fast.status_code, fast.request, fast.http_version) == (200, request, "HTTP/1.1")
    assert fast.read() == slow.read() == b"\xe9t\xe9"
    assert fast.text == slow.text == "été"
    assert fast.is_closed and fast.is_stream_consumed


def test_response_falls_back_to_the_constructor_when_fields_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another httpx whose constructor sets a field we do not: the check says no.
    original = httpx.Response.__init__

    def init(self: httpx.Response, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.new_field = 1  # type: ignore[attr-defined]

    monkeypatch.setattr(httpx.Response, "__init__", init)
    assert not _wire._same_response_as_public_constructor()
