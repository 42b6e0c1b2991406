"""Durations written as text in protobuf's JSON form (``"600s"``, ``"0.25s"``).

That form is what gRPC's bootstrap uses (e.g. a file_watcher ``refresh_interval``) and
the seconds form of pymesh's mesh file; protobuf's own ``Duration`` parses it, with its
range and precision rules, rather than a regex of ours.
"""

from __future__ import annotations

from google.protobuf import duration_pb2  # type: ignore[import-untyped, unused-ignore]

__all__ = ["json_duration_seconds"]


def json_duration_seconds(text: str) -> float:
    """Seconds of a protobuf JSON Duration such as ``"600s"``, ``"1.5s"`` or ``"-2s"``.

    Raises ValueError (protobuf's message) for anything else, e.g. ``"10m"`` or ``"5"``.
    """
    duration = duration_pb2.Duration()
    duration.FromJsonString(text)
    return float(duration.ToNanoseconds()) / 1e9
