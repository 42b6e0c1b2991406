"""Building httpcore requests without re-validating what httpx already validated.

``httpcore.Request(...)`` checks and copies every header and URL part (about 15 calls for
a small request). Everything pymesh hands it is already bytes that httpx validated when
the caller built the request, or that came from parsed xDS config, so the checks buy
nothing on the request path. :func:`core_request` fills the same attributes directly.

It only does so after checking, once at import, that this httpcore's constructor sets
exactly the attributes we set (and the same values); any other httpcore falls back to
the public constructor, so a new httpcore version can cost speed but never correctness.
"""

from __future__ import annotations

import typing

import httpcore

__all__ = ["core_request"]

Headers = list[tuple[bytes, bytes]]
Stream = typing.Iterable[bytes] | typing.AsyncIterable[bytes]

_new = object.__new__


def _direct(
    method: bytes,
    scheme: bytes,
    host: bytes,
    port: int | None,
    target: bytes,
    headers: Headers,
    stream: Stream,
    extensions: dict[str, typing.Any],
) -> httpcore.Request:
    if "target" in extensions:  # httpcore's own override of the request target
        return _checked(method, scheme, host, port, target, headers, stream, extensions)
    url = _new(httpcore.URL)
    url.scheme = scheme
    url.host = host
    url.port = port
    url.target = target
    request = _new(httpcore.Request)
    request.method = method
    request.url = url
    request.headers = headers
    request.stream = stream
    request.extensions = extensions
    return request


def _checked(
    method: bytes,
    scheme: bytes,
    host: bytes,
    port: int | None,
    target: bytes,
    headers: Headers,
    stream: Stream,
    extensions: dict[str, typing.Any],
) -> httpcore.Request:
    return httpcore.Request(
        method,
        httpcore.URL(scheme=scheme, host=host, port=port, target=target),
        headers=headers,
        content=stream,
        extensions=extensions,
    )


def _same_as_public_constructor() -> bool:
    """Whether :func:`_direct` builds what httpcore's constructor builds, here."""
    args: tuple[typing.Any, ...] = (
        b"GET",
        b"http",
        b"10.0.0.1",
        8080,
        b"/a?b=c",
        [(b"host", b"svc"), (b"x-a", b"1")],
        [b"body"],
        {"timeout": {"connect": 1.0}},
    )
    try:
        fast, slow = _direct(*args), _checked(*args)
        return bool(
            vars(fast).keys() == vars(slow).keys()
            and vars(fast.url) == vars(slow.url)
            and all(
                getattr(fast, name) == getattr(slow, name)
                for name in vars(slow)
                if name not in ("url", "stream")
            )
            and list(typing.cast(typing.Iterable[bytes], slow.stream)) == [b"body"]
        )
    except Exception:  # any surprise in a future httpcore: use its constructor
        return False


#: ``core_request(method, scheme, host, port, target, headers, stream, extensions)``.
core_request = _direct if _same_as_public_constructor() else _checked
