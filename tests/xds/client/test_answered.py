"""Which names a SotW response provably answers (pymesh/xds/client/_answered.py),
against a brute-force reading of the same rule, including after entries merge."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pymesh.xds.client._answered import SentRequests

NAMES = st.frozensets(st.sampled_from("abcdef"), max_size=6)


@given(requests=st.lists(NAMES, min_size=1, max_size=12), carried=NAMES, limit=st.integers(2, 5))
def test_a_name_is_proven_absent_only_if_every_possible_answered_request_named_it(
    requests: list[frozenset[str]], carried: frozenset[str], limit: int
) -> None:
    sent = SentRequests(limit=limit)
    for names in requests:
        sent.record(names)
    proven = sent.answered(carried)
    candidates = [names for names in requests if carried <= names]
    if not candidates:
        assert proven == frozenset()
    else:
        # Sound: merging may prove less than the exact rule, never more.
        assert proven <= frozenset.intersection(*candidates)
        if len(requests) <= limit:  # nothing merged: exactly the rule
            assert proven == frozenset.intersection(*candidates)


def test_merged_requests_alone_prove_nothing_they_could_not_have_produced() -> None:
    """Found by hypothesis: merged, {a,b,x} and {a,d,x} cover a response carrying
    {a,b,d}, which neither request could have produced; x must not be proven absent."""
    sent = SentRequests(limit=2)
    for names in ({"a", "b", "x"}, {"a", "d", "x"}, set()):
        sent.record(frozenset(names))
    assert sent.answered({"a", "b", "d"}) == frozenset()
    # A request kept whole that is a candidate makes the merged entry's proof usable.
    sent = SentRequests(limit=2)
    for names in ({"a", "b", "x"}, {"a", "d", "x"}, {"a", "b", "d", "x"}):
        sent.record(frozenset(names))
    assert sent.answered({"a", "b", "d"}) == {"a", "x"}


def test_requests_before_the_earliest_candidate_are_forgotten() -> None:
    sent = SentRequests()
    sent.record(frozenset({"a"}))
    sent.record(frozenset({"a", "b"}))
    assert sent.answered({"b"}) == {"a", "b"}
    # The server has moved past the {"a"} request: it cannot be answered again.
    assert sent.answered({"a"}) == {"a", "b"}
    sent.reset()
    assert sent.answered(set()) == frozenset()
