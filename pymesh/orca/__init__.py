"""ORCA (gRFC A51): servers report their load so that clients can balance by it.

The application records its load::

    from pymesh import orca

    orca.server_metrics_recorder().set_application_utilization(0.6)   # process-wide
    ...
    def Handler(self, request, context):                               # inside a call
        rec = orca.call_metrics_recorder()
        if rec is not None:
            rec.set_request_cost("db_rows", 120)

and a server sends it:

* gRPC, per call: ``grpc.server(pool, interceptors=[orca.OrcaServerInterceptor()])`` (or
  :class:`AsyncOrcaServerInterceptor` for ``grpc.aio.server``) adds the
  ``endpoint-load-metrics-bin`` trailer;
* gRPC, out of band: ``orca.OrcaService().add_to_server(server)`` serves
  ``xds.service.orca.v3.OpenRcaService``;
* HTTP: ``app = orca.OrcaMiddleware(app)`` (ASGI) or ``orca.OrcaWsgiMiddleware(app)``
  (WSGI) adds Envoy's ``endpoint-load-metrics`` response header;
  :func:`load_metrics_header` formats it for any other server.

pymesh's client-side weighted round robin (Envoy's ``client_side_weighted_round_robin``,
gRFC A58) and grpcio's ``weighted_round_robin`` read these reports.
"""

from pymesh.orca._grpc import (
    ORCA_HEADER,
    ORCA_SERVICE,
    ORCA_STREAM_METHOD,
    ORCA_TRAILER,
    AsyncOrcaServerInterceptor,
    OrcaServerInterceptor,
    OrcaService,
)
from pymesh.orca._http import (
    HeaderFormat,
    OrcaMiddleware,
    OrcaWsgiMiddleware,
    load_metrics_header,
)
from pymesh.orca._metrics import (
    CallMetricsRecorder,
    OrcaMetricError,
    ServerMetrics,
    ServerMetricsRecorder,
    call_metrics_recorder,
    server_metrics_recorder,
)

__all__ = [
    "ORCA_HEADER",
    "ORCA_SERVICE",
    "ORCA_STREAM_METHOD",
    "ORCA_TRAILER",
    "AsyncOrcaServerInterceptor",
    "CallMetricsRecorder",
    "HeaderFormat",
    "OrcaMetricError",
    "OrcaMiddleware",
    "OrcaServerInterceptor",
    "OrcaService",
    "OrcaWsgiMiddleware",
    "ServerMetrics",
    "ServerMetricsRecorder",
    "call_metrics_recorder",
    "load_metrics_header",
    "server_metrics_recorder",
]
