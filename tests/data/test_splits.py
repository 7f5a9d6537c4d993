import numpy as np
import pytest

from nforge_jax.data import splits as P
from nforge_jax.data.store import FeatureStore, PipelineError


def _meta(study, subject, **kw):
    return {"study": study, "subject": subject, "tr_s": 1.0, **kw}


def test_subject_weights_recording_time(tmp_path):
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline("A:1", fmri=np.ones((1800, 2)), meta=_meta("A", "x"))
    s.write_timeline("A:2", fmri=np.ones((1800, 2)), meta=_meta("A", "x"))
    s.write_timeline("A:3", fmri=np.ones((360, 2)), meta=_meta("A", "y"))
    assert P.subject_weights(s) == pytest.approx({"A/x": 1.0, "A/y": 0.1})
    assert P.subject_weights(s, ["A:3"], weigh_by="uniform") == {"A/y": 1.0}


def test_split_timelines(tmp_path):
    s = FeatureStore.create(tmp_path / "st")
    for seg in range(40):
        for sub in ("subject1", "subject2"):
            s.write_timeline(f"Wen2017:run=1,seg=seg{seg},subject={sub}", fmri=np.ones((2, 2)),
                             meta=_meta("Wen2017", sub))
    s.write_timeline("Lebel2023Bold:run=1,subject=UTS01,task=story", fmri=np.ones((2, 2)),
                     meta=_meta("Lebel2023Bold", "UTS01", task="story"))
    train, val = P.split_timelines(s)
    assert sorted(train + val) == s.timelines and not set(train) & set(val)
    assert (train, val) == P.split_timelines(s)
    # the only Lebel story is forced into val; both subjects of a segment land on the same side
    assert "Lebel2023Bold:run=1,subject=UTS01,task=story" in val
    wen_val_segs = {P.parse_timeline_name(t)["seg"] for t in val if t.startswith("Wen")}
    for seg in wen_val_segs:
        assert f"Wen2017:run=1,seg={seg},subject=subject1" in val
        assert f"Wen2017:run=1,seg={seg},subject=subject2" in val
    assert 1 <= len(wen_val_segs) <= 12
    assert P.split_timelines(s, seed=1) != (train, val)
    with pytest.raises(PipelineError, match="split attribute 'chunk'"):
        P.split_timelines(s, attributes={"Wen2017": "chunk"})
