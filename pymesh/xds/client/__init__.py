"""The xDS client: ADS streams (state of the world or delta), watchers, cache, backoff,
timers, fallback across servers (gRFC A71) and federation by authority (gRFC A47,
``_federation.FederatedXdsClient``, which a Mesh uses)."""

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
