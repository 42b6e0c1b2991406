"""docs/features.md is generated from the field table; the checked-in file must match."""

from __future__ import annotations

from pathlib import Path

from pymesh.xds.resources import _fields

FEATURES = Path(__file__).resolve().parents[3] / "docs" / "features.md"


def test_features_md_is_generated_from_the_table() -> None:
    assert _fields.features_path() == FEATURES
    text = FEATURES.read_text(encoding="utf-8")
    assert text.count(_fields.BEGIN) == 1 and text.count(_fields.END) == 1
    # If this fails: python -m pymesh.xds.resources._fields --write
    assert _fields.is_current(FEATURES)
    assert _fields.main(["--check"]) == 0


def test_the_hand_written_prose_is_kept() -> None:
    text = FEATURES.read_text(encoding="utf-8")
    head = text.split(_fields.BEGIN)[0]
    assert "## What the request path does" in head
    assert "## Decoding" in head
    assert "## Listener (LDS)" not in head  # the field tables are all generated


def test_a_stale_file_is_detected(tmp_path: Path) -> None:
    text = FEATURES.read_text(encoding="utf-8")
    stale = tmp_path / "features.md"
    row = "| `max_connection_pools` | Warn |"
    assert row in text
    stale.write_text(text.replace(row, "| `max_connection_pools` | Honoured |"), encoding="utf-8")
    assert not _fields.is_current(stale)
    # A hand edit of the prose is fine; only the generated section must match.
    stale.write_text(text.replace("## Decoding", "## Decoding resources"), encoding="utf-8")
    assert _fields.is_current(stale)


def test_every_warned_field_is_listed_as_warn() -> None:
    text = FEATURES.read_text(encoding="utf-8")
    section = text.split(_fields.BEGIN)[1]
    for key, fields in _fields.TABLE.items():
        name = key.split("@")[0]
        assert f"`{name}`" in section, key
        for fname, f in fields.items():
            if f.status is _fields.Status.WARNED:
                assert f"| `{fname}` | Warn |" in section, (key, fname)
