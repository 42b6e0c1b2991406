"""A finished call that pymesh answered itself, in every shape grpcio hands out."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc


class LocalRpcError(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A failed call (raised by ``__call__``/``with_call``, returned by ``future()``, or
    iterated for server-streaming calls) carrying a status pymesh chose itself."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def __repr__(self) -> str:
        return f"<LocalRpcError {self._code.name}: {self._details!r}>"

    # grpc.Call ------------------------------------------------------------------
    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def debug_error_string(self) -> str:
        return f"pymesh local status {self._code.name}: {self._details}"

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # already terminated: the caller runs it now (grpc's contract)

    # grpc.Future ----------------------------------------------------------------
    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> NoReturn:
        raise self

    def exception(self, timeout: float | None = None) -> LocalRpcError:
        return self

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        return None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    # server-streaming shape -------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> NoReturn:
        raise self

    def next(self) -> NoReturn:
        raise self
