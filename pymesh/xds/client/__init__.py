"""The xDS client: ADS (state of the world) stream, watchers, cache, backoff, timers."""

from pymesh.xds.client._backoff import Backoff
from pymesh.xds.client._client import (
    CDS,
    EDS,
    LDS,
    RDS,
    Decoder,
    ResourceStatus,
    ResourceWatcher,
    XdsClient,
    XdsClientStats,
)
from pymesh.xds.client._transport import channel_factory, node_to_proto

__all__ = [
    "CDS",
    "EDS",
    "LDS",
    "RDS",
    "Backoff",
    "Decoder",
    "ResourceStatus",
    "ResourceWatcher",
    "XdsClient",
    "XdsClientStats",
    "channel_factory",
    "node_to_proto",
]
