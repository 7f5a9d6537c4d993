"""Output spaces: records name their space; pairing two spaces that differ is one clear error."""

import types

import numpy as np
import pytest

from nforge_jax.data.spaces import (OutputSpace, SpaceMismatch, check_same_space, fsaverage5_space, space_of,
                                    space_of_meta, subcortical_space)


def _grid(n=5, exact=False, shift=0):
    ijk = np.stack([np.arange(n) + shift, np.zeros(n, int), np.zeros(n, int)], 1)
    return types.SimpleNamespace(ijk=ijk, n_voxels=n, shape=(91, 109, 91), affine=np.diag([2.0, 2, 2, 1]),
                                 exact=exact, source="somewhere")


def test_records_round_trip_and_legacy_records_are_inferred():
    sub = subcortical_space(_grid())
    assert OutputSpace.from_dict(sub.to_dict()).key() == sub.key()
    assert space_of(None, 20484).name == "fsaverage5"
    assert space_of_meta({}, 48).name == "unspecified" and space_of_meta({}, 48).n_outputs == 48
    assert space_of("fsaverage5").n_outputs == 20484
    # Older study stores kept the BOLD's source space under the same key: not an output space.
    assert space_of_meta({"space": "MNI152NLin2009cAsym"}, 20484).name == "fsaverage5"


def test_mixing_spaces_names_both_sides():
    cortex, sub = fsaverage5_space(), subcortical_space(_grid())
    with pytest.raises(SpaceMismatch, match=r"the store is subcortical \(5 voxels.*the model is fsaverage5 \(20,484"):
        check_same_space(cortex, sub, expected_what="the model", got_what="the store")
    # Same count, other voxels (another atlas file): still refused.
    with pytest.raises(SpaceMismatch, match="other voxels"):
        check_same_space(sub, subcortical_space(_grid(shift=1)), expected_what="a", got_what="b")
    # The exact flag and the source are descriptive only.
    check_same_space(sub, subcortical_space(_grid(exact=True)), expected_what="a", got_what="b")
    # unspecified matches by size only
    check_same_space(OutputSpace("unspecified", 20484), cortex, expected_what="a", got_what="b")
    with pytest.raises(SpaceMismatch):
        check_same_space(OutputSpace("unspecified", 48), cortex, expected_what="a", got_what="b")


@pytest.mark.parametrize("record, message", [
    ({"name": "mni", "n_outputs": 3}, "expected one of"),
    ({"name": "fsaverage5", "n_outputs": 10}, "20484 vertices"),
    ({"name": "subcortical", "n_outputs": 10}, "grid"),
    ({"name": "fsaverage5"}, "'name' and 'n_outputs'"),
    ({"name": "fsaverage5", "n_outputs": 20484, "mesh": 1}, "unknown fields"),
    ("subcortical", "does not describe"),
])
def test_malformed_records_are_refused(record, message):
    with pytest.raises(ValueError, match=message):
        space_of(record, where="store.json")


def test_a_record_that_disagrees_with_its_data_is_refused():
    with pytest.raises(SpaceMismatch, match="holds 100 columns"):
        space_of_meta({"space": {"name": "fsaverage5", "n_outputs": 20484}}, 100)
