"""Resilience building blocks: retry decisions, circuit breaking, outlier detection,
faults. Independent of httpx/grpc; the call engine (pymesh.call) wires them in."""

from pymesh.resilience.budget import CircuitBreaker, OverflowCounters
from pymesh.resilience.fault import NO_FAULT, FaultDecision, FaultInjector
from pymesh.resilience.outcome import Outcome, grpc_to_http_status
from pymesh.resilience.outlier import OutlierDetector
from pymesh.resilience.retry import RetryDecider, jittered_backoff

__all__ = [
    "NO_FAULT",
    "CircuitBreaker",
    "FaultDecision",
    "FaultInjector",
    "Outcome",
    "OutlierDetector",
    "OverflowCounters",
    "RetryDecider",
    "grpc_to_http_status",
    "jittered_backoff",
]
