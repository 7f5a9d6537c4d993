"""Praat TextGrid reader: the three serialisations give the same tiers; malformed files are named."""

import pytest

import study_replicas as replicas
from nforge_jax.data.studies.textgrid import TextGridError, parse_textgrid, read_textgrid

TIERS = [("phone", [(0.0, 0.5, "sp"), (0.5, 0.9, "AY1")]),
         ("word", [(0.0, 0.5, 'say "hi"'), (0.5, 0.9, "I")])]


@pytest.mark.parametrize("form", ["long", "short", "chronological"])
def test_three_forms_read_the_same(tmp_path, form):
    path = tmp_path / f"{form}.TextGrid"
    path.write_text(replicas.textgrid_text(TIERS, 0.9, form))
    tiers = read_textgrid(path)
    assert [(t.name, t.kind) for t in tiers] == [("phone", "IntervalTier"), ("word", "IntervalTier")]
    assert [t.items for t in tiers] == [items for _, items in TIERS]


def test_utf16_with_bom(tmp_path):
    path = tmp_path / "u16.TextGrid"
    path.write_bytes(replicas.textgrid_text(TIERS, 0.9, "long").encode("utf-16"))
    assert read_textgrid(path)[1].items[0][2] == 'say "hi"'


def test_malformed_files_name_the_file(tmp_path):
    with pytest.raises(TextGridError, match="missing.TextGrid: TextGrid file not found"):
        read_textgrid(tmp_path / "missing.TextGrid")
    text = replicas.textgrid_text(TIERS, 0.9, "short")
    cut = tmp_path / "cut.TextGrid"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(TextGridError, match="cut.TextGrid: file ends early"):
        read_textgrid(cut)
    other = tmp_path / "other.TextGrid"
    other.write_text("hello\n")
    with pytest.raises(TextGridError, match="other.TextGrid: not a Praat TextGrid"):
        read_textgrid(other)
    with pytest.raises(TextGridError, match="ending before it starts"):
        parse_textgrid(replicas.textgrid_text([("word", [(1.0, 0.5, "x")])], 1.0, "short"))
