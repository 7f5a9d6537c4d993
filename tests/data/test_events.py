import numpy as np
import pandas as pd
import pytest

from nforge_jax.data.events import LEADING_COLUMNS, EventsError, make_events, validate_events

TL1 = "Wen2017:run=1,seg=seg3,subject=subject1"
TL2 = "Wen2017:run=1,seg=seg1,subject=subject1"


def rows():
    return [
        {"type": "Word", "start": 3.0, "duration": 0.2, "timeline": TL1, "subject": "Wen2017/subject1",
         "text": "hello", "context": "hello", "language": "english"},
        {"type": "Fmri", "start": 0.0, "duration": 480.0, "timeline": TL1, "subject": "Wen2017/subject1",
         "filepath": "/d/s1/seg3_run1.nii.gz", "frequency": 0.5, "layout": "MNI152NLin2009cAsym"},
        {"type": "Video", "start": 0.0, "duration": 60.0, "timeline": TL2, "filepath": "/d/seg1.mp4",
         "frequency": 30.0, "offset": 0.0},
        {"type": "Video", "start": 0.0, "duration": 480.0, "timeline": TL1, "filepath": "/d/seg3.mp4"},
        {"type": "Word", "start": 1.0, "duration": 0.3, "timeline": TL2, "text": "world"},
        {"type": "Audio", "start": 0.0, "duration": 60.0, "timeline": TL2, "filepath": "/d/seg1.wav",
         "offset": 60.0},
    ]


def test_sorting_stop_and_columns():
    df = make_events(rows())
    # expected order written out by hand: TL1 first (seen first), start asc, duration desc, ties stable
    assert list(df["timeline"]) == [TL1, TL1, TL1, TL2, TL2, TL2]
    assert list(df["type"]) == ["Fmri", "Video", "Word", "Video", "Audio", "Word"]
    assert list(df["duration"]) == [480.0, 480.0, 0.2, 60.0, 60.0, 0.3]
    assert list(df["stop"]) == pytest.approx([480.0, 480.0, 3.2, 60.0, 60.0, 1.3])
    assert tuple(df.columns[: len(LEADING_COLUMNS)]) == LEADING_COLUMNS
    assert list(df["session"]) == [""] * 6 and list(df["run"]) == [""] * 6
    # media offsets default to 0; frequency left missing where not given
    assert df.loc[1, "offset"] == 0.0 and np.isnan(df.loc[1, "frequency"])
    assert df.loc[4, "offset"] == 60.0
    assert list(df.index) == list(range(6))


def test_idempotent_and_input_untouched():
    src = pd.DataFrame(rows())
    before = src.copy()
    once = validate_events(src)
    pd.testing.assert_frame_equal(src, before)
    pd.testing.assert_frame_equal(validate_events(once), once)


def test_stop_is_recomputed():
    r = rows()[:1]
    r[0]["stop"] = 99.0
    assert make_events(r)["stop"].iloc[0] == pytest.approx(3.2)


def test_missing_duration_is_zero_and_categorical():
    df = make_events([{"type": "CategoricalEvent", "start": 2.5, "timeline": "t"}])
    assert df["duration"].iloc[0] == 0.0 and df["stop"].iloc[0] == 2.5


def _bad(index, **changes):
    r = rows()
    r[index].update(changes)
    return r


@pytest.mark.parametrize("data, match", [
    (_bad(0, type="Wrod"), r"row 0 \(type 'Wrod'\), column 'type': expected one of"),
    (_bad(2, start="abc"), r"row 2 \(type 'Video'\), column 'start': expected a number, got 'abc'"),
    (_bad(2, start=np.inf), r"row 2 .*column 'start': expected a finite"),
    (_bad(3, duration=-1.0), r"row 3 .*column 'duration': expected a finite number of seconds >= 0"),
    (_bad(1, frequency=0.0), r"row 1 \(type 'Fmri'\), column 'frequency': expected a sampling frequency"),
    (_bad(1, frequency=None), r"row 1 \(type 'Fmri'\), column 'frequency'"),
    (_bad(1, subject=""), r"row 1 \(type 'Fmri'\), column 'subject': expected a non-empty subject"),
    (_bad(1, layout="MNI"), r"row 1 .*column 'layout': expected one of"),
    (_bad(4, text=""), r"row 4 \(type 'Word'\), column 'text': expected a non-empty string"),
    (_bad(4, text=None), r"row 4 \(type 'Word'\), column 'text'"),
    (_bad(5, offset=-2.0), r"row 5 \(type 'Audio'\), column 'offset'"),
    (_bad(3, filepath=""), r"row 3 \(type 'Video'\), column 'filepath': expected a non-empty file path"),
    (_bad(0, timeline=""), r"row 0 .*column 'timeline': expected a non-empty string"),
    (_bad(0, modality="spoken"), r"row 0 .*column 'modality': expected one of"),
    (_bad(2, start=True), r"row 2 .*column 'start': expected a number"),
])
def test_errors_name_row_and_column(data, match):
    with pytest.raises(EventsError, match=match):
        make_events(data)


def test_error_uses_index_label_and_source():
    df = pd.DataFrame(_bad(2, start="x"), index=[10, 11, 12, 13, 14, 15])
    with pytest.raises(EventsError, match=r"^study.tsv: row 12 \(position 2\)"):
        validate_events(df, source="study.tsv")


def test_missing_columns():
    with pytest.raises(EventsError, match="missing required column 'timeline'"):
        make_events([{"type": "Word", "start": 0.0, "text": "a"}])
    with pytest.raises(EventsError, match=r"row 0 \(type 'Word'\): column 'text' is required"):
        make_events([{"type": "Word", "start": 0.0, "timeline": "t"}])
    with pytest.raises(EventsError, match=r"column 'filepath' is required for Fmri"):
        make_events([{"type": "Fmri", "start": 0.0, "timeline": "t", "frequency": 1.0, "subject": "s"}])
    with pytest.raises(EventsError, match="row 1: expected a mapping"):
        make_events([{"type": "Word", "start": 0.0, "timeline": "t", "text": "a"}, ["x"]])
    with pytest.raises(EventsError, match="expected a pandas DataFrame"):
        validate_events([1, 2])


def test_many_bad_rows_counted():
    r = [{"type": "Word", "start": float(i), "timeline": "t", "text": ""} for i in range(4)]
    with pytest.raises(EventsError, match=r"row 0 .*\(3 more rows like it\)"):
        make_events(r)


def test_empty():
    df = make_events([])
    assert len(df) == 0 and tuple(df.columns[:4]) == ("type", "start", "duration", "stop")
