"""Building httpcore requests and httpx responses without re-validating what is valid.

``httpcore.Request(...)`` checks and copies every header and URL part (about 15 calls for
a small request). Everything pymesh hands it is already bytes that httpx validated when
the caller built the request, or that came from parsed xDS config, so the checks buy
nothing on the request path. :func:`core_request` fills the same attributes directly.
Likewise ``httpx.Response(...)`` coerces every header of httpcore's answer, which is
already bytes: :func:`httpx_response` builds the same response directly.

Each only does so after checking, once at import, that this httpcore's (httpx's)
constructor sets exactly the attributes we set (and the same values); any other version
falls back to the public constructor, so a new httpcore or httpx can cost speed but never
correctness.
"""

from __future__ import annotations

import typing

import httpcore
import httpx

__all__ = ["core_request", "httpx_response"]

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


def _direct_response(
    status: int,
    headers: Headers,
    stream: httpx.SyncByteStream | httpx.AsyncByteStream,
    extensions: typing.Mapping[str, typing.Any],
    request: httpx.Request,
) -> httpx.Response:
    fields = _new(httpx.Headers)
    fields._list = [(k, k.lower(), v) for k, v in headers]
    fields._encoding = None
    response = _new(httpx.Response)
    response.status_code = status
    response.headers = fields
    response._request = request
    response.next_request = None
    response.extensions = dict(extensions)
    response.history = []
    response.is_closed = False
    response.is_stream_consumed = False
    response.default_encoding = "utf-8"
    response.stream = stream
    response._num_bytes_downloaded = 0
    return response


def _checked_response(
    status: int,
    headers: Headers,
    stream: httpx.SyncByteStream | httpx.AsyncByteStream,
    extensions: typing.Mapping[str, typing.Any],
    request: httpx.Request,
) -> httpx.Response:
    return httpx.Response(
        status_code=status,
        headers=headers,
        stream=stream,
        extensions=extensions,
        request=request,
    )


def _same_response_as_public_constructor() -> bool:
    """Whether :func:`_direct_response` builds what httpx's constructor builds, here."""
    try:
        args: tuple[typing.Any, ...] = (
            200,
            [(b"Content-Type", b"text/plain"), (b"X-A", b"1"), (b"x-a", b"2")],
            httpx.ByteStream(b"ok"),
            {"http_version": b"HTTP/1.1"},
            httpx.Request("GET", "http://svc/"),
        )
        fast, slow = _direct_response(*args), _checked_response(*args)
        fields = ("_list", "_encoding")
        return bool(
            vars(fast).keys() == vars(slow).keys()
            and vars(fast.headers).keys() == vars(slow.headers).keys() == set(fields)
            and all(getattr(fast.headers, n) == getattr(slow.headers, n) for n in fields)
            and all(getattr(fast, n) == getattr(slow, n) for n in vars(slow) if n != "headers")
            and fast.extensions is not args[3]  # a copy, as httpx makes
        )
    except Exception:  # any surprise in a future httpx: use its constructor
        return False


#: ``httpx_response(status, headers, stream, extensions, request)``: the httpx response
#: for an upstream answer (``headers``: httpcore's, bytes).
httpx_response = _direct_response if _same_response_as_public_constructor() else _checked_response
