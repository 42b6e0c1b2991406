"""Any mangled mesh file fails with ConfigFileError, never with another exception."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pymesh.errors import ConfigFileError
from pymesh.server import compile_mesh

GOOD: dict[str, Any] = {
    "services": {
        "reviews": {
            "port": 9080,
            "protocol": "http",
            "endpoints": ["127.0.0.1:1", {"address": "127.0.0.2", "locality": "a/b"}],
            "versions": {"v1": {"endpoints": ["127.0.0.1:8001"]}},
            "routes": [
                {
                    "name": "r",
                    "match": {"prefix": "/", "headers": {"h": "x"}, "query": {"q": "present"}},
                    "split": {"v1": 1},
                    "timeout": "1s",
                    "retries": {"attempts": 1, "on": "5xx", "backoff": {"base": "1ms"}},
                    "fault": {"abort": {"status": 503}, "delay": {"fixed": "1ms"}},
                }
            ],
            "traffic_policy": {
                "lb": "RING_HASH",
                "hash_on": {"header": "x"},
                "outlier_detection": {"interval": "1s"},
                "circuit_breakers": {"max_requests": 1},
                "tls": {"mode": "ISTIO_MUTUAL"},
            },
        }
    },
    "raw": {"clusters": [{"name": "x", "type": "STATIC"}]},
}

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


ALL_PATHS = paths(GOOD)[1:]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sampled_from(ALL_PATHS), junk)
def test_mangled_files_raise_only_config_file_error(path: tuple[Any, ...], value: Any) -> None:
    data = copy.deepcopy(GOOD)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    try:
        compile_mesh(data, "fuzz")
    except ConfigFileError as e:
        assert e.where and e.reason


def test_good_fuzz_base_compiles() -> None:
    compile_mesh(GOOD, "fuzz")
