"""Load balancing: per-request endpoint pickers built from a cluster and its endpoints.

``build_picker(cluster, cla, states=...)`` returns an immutable :class:`Picker`;
:class:`EndpointStates` keeps per-endpoint counters (active requests, latency EWMA)
across picker rebuilds. Semantics follow Envoy (priorities, overprovisioning, panic,
locality weighting, EDF weighted round robin, least request, Envoy-identical ring hash
and maglev tables); ``peak_ewma`` is pymesh's own policy (type ``pymesh.lb.v1.PeakEwma``).
"""

from pymesh.lb._hashing import host_hash_key
from pymesh.lb._picker import Picker, build_picker
from pymesh.lb._state import EndpointState, EndpointStates

__all__ = ["EndpointState", "EndpointStates", "Picker", "build_picker", "host_hash_key"]
