"""Resilience building blocks: retries, circuit breaking, outlier detection, faults,
timeouts. Independent of httpx/grpc; the transports wire them in."""

from pymesh.resilience.budget import CircuitBreaker, OverflowCounters
from pymesh.resilience.fault import NO_FAULT, FaultDecision, FaultInjector, merge_fault
from pymesh.resilience.outcome import Outcome, grpc_to_http_status
from pymesh.resilience.outlier import OutlierDetector
from pymesh.resilience.retry import (
    RetryDecider,
    jittered_backoff,
    make_async_retrying,
    make_retrying,
    outcome_of,
)
from pymesh.resilience.timeouts import effective_deadline, parse_grpc_timeout, per_try_deadline

__all__ = [
    "NO_FAULT",
    "CircuitBreaker",
    "FaultDecision",
    "FaultInjector",
    "Outcome",
    "OutlierDetector",
    "OverflowCounters",
    "RetryDecider",
    "effective_deadline",
    "grpc_to_http_status",
    "jittered_backoff",
    "make_async_retrying",
    "make_retrying",
    "merge_fault",
    "outcome_of",
    "parse_grpc_timeout",
    "per_try_deadline",
]
