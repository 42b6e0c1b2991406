"""core_request builds what httpcore's own constructor builds."""

from __future__ import annotations

import httpcore

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
