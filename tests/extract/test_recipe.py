"""The extraction recipe: read from TRIBE v2's config.yaml, carried by converted checkpoints and stores, used
by predict(events) and `nforge extract --checkpoint`, and a store of another recipe refused by name."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import make_release
from nforge_jax.cli import main as nforge
from nforge_jax.convert.tribev2 import convert_tribev2
from nforge_jax.data.events import make_events
from nforge_jax.data.provenance import recipe_differences
from nforge_jax.data.store import FeatureStore
from nforge_jax.extract import ExtractConfig, RecipeError
from nforge_jax.extract.run import extract_events
from nforge_jax.extract.text import TextConfig
from nforge_jax.inference.stimulus import add_context
from nforge_jax.inference.model import NForgeModel
from reference_extractors import release_data_section

ROOT = Path(__file__).resolve().parents[2]


def write_config(path, data):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.dump({"data": data, "brain_model_config": {}}))
    return path


def test_release_config_gives_the_release_recipe(tmp_path):
    """config.yaml sections dumped by neuralset's own extractor classes (as the release's were) -> the recipe
    TRIBEV2_SPEC D.2 describes."""
    got = ExtractConfig.from_tribev2_config(write_config(tmp_path / "rel", release_data_section()))
    assert got == ExtractConfig.tribev2_release()
    assert got.text.cache_n_layers == 20 and got.video.cache_n_layers == 20 and got.text.batch_size == 4
    assert got.audio.norm_audio and got.video.clip_s == 4.0 and got.text.contextualized
    # data.layers_to_use overrides every extractor's layers, as TRIBE's Data does
    data = {**release_data_section(), "layers_to_use": [0.25, 1.0], "layer_aggregation": "group_mean"}
    got = ExtractConfig.from_tribev2_config(write_config(tmp_path / "over", data))
    assert got.text.layers == got.audio.layers == got.video.layers == (0.25, 1.0)


@pytest.mark.parametrize("where,value,field", [
    (("text_feature", "colour"), "blue", "data.text_feature.colour"),
    (("text_feature", "aggregation"), "mean", "data.text_feature.aggregation"),
    (("audio_feature", "layer_type"), "convolution", "data.audio_feature.layer_type"),
    (("video_feature", "image", "pretrained"), False, "data.video_feature.image.pretrained"),
])
def test_recipe_fields_it_cannot_honour_are_named(tmp_path, where, value, field):
    data = release_data_section()
    section = data
    for key in where[:-1]:
        section = section[key]
    section[where[-1]] = value
    with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
        ExtractConfig.from_tribev2_config(write_config(tmp_path, data))


@pytest.mark.parametrize("mods,expected", [(["text", "vidoe"], "names 'vidoe'"),
                                           ("video, audio", "names 'video, audio'"), ([["text"]], "expected a list")])
def test_features_to_use_with_an_unknown_name_is_refused_not_dropped(tmp_path, mods, expected):
    data = {**release_data_section(), "features_to_use": mods}
    with pytest.raises(RecipeError) as error:
        ExtractConfig.from_tribev2_config(write_config(tmp_path, data))
    assert "field data.features_to_use" in str(error.value) and expected in str(error.value)


@pytest.mark.parametrize("modality, field, value, expected", [
    ("text", "batch_size", "4", "field text.batch_size is '4'; expected an integer"),
    ("text", "contextualized", "yes", "field text.contextualized is 'yes'; expected true or false"),
    ("video", "clip_s", "4", "field video.clip_s is '4'; expected a number"),
    ("audio", "layers", "0.75", "field audio.layers is '0.75'; expected a list of numbers"),
    ("video", "cache_n_layers", 2.5, "field video.cache_n_layers is 2.5; expected an integer or null"),
])
def test_recorded_recipe_settings_of_the_wrong_type_are_named(modality, field, value, expected):
    recipe = ExtractConfig.tribev2_release().to_dict()
    recipe[modality][field] = value
    with pytest.raises(RecipeError) as error:
        ExtractConfig.from_dict(recipe)
    assert expected in str(error.value)


def test_recipe_dict_round_trip_and_unknown_fields():
    recipe = ExtractConfig.tribev2_release()
    assert ExtractConfig.from_dict(recipe.to_dict()) == recipe
    bad = recipe.to_dict()
    bad["text"]["temperature"] = 0.7
    with pytest.raises(RecipeError, match="unknown field text.temperature"):
        ExtractConfig.from_dict(bad)
    with pytest.raises(RecipeError, match="unknown field 'colour'"):
        ExtractConfig.from_dict({**recipe.to_dict(), "colour": 1})
    replaced = recipe.with_model_ids(text="/models/llama")
    assert replaced.text.model_id == "/models/llama" and replaced.text.cache_n_layers == 20


def test_context_pass_is_recorded_and_compared():
    """The shared pass is opt-in and travels with the recipe; a recipe recorded before the setting existed
    reads and compares as the release rule; a shared-pass store differs from the release recipe by name."""
    release = ExtractConfig.tribev2_release()
    assert release.text.context_pass == "per_word" and release.to_dict()["text"]["context_pass"] == "per_word"
    shared = dataclasses.replace(release, text=dataclasses.replace(release.text, context_pass="shared"))
    assert ExtractConfig.from_dict(shared.to_dict()) == shared
    old = release.to_dict()
    del old["text"]["context_pass"]  # a recipe written before the setting existed
    assert ExtractConfig.from_dict(old) == release
    assert recipe_differences(release.to_dict(), old) == [] and recipe_differences(old, release.to_dict()) == []
    assert recipe_differences(old, shared.to_dict()) == ["text.context_pass: 'per_word' (model) vs 'shared' (features)"]
    bad = release.to_dict()
    bad["text"]["context_pass"] = "blocks"
    with pytest.raises(RecipeError, match="text: text context_pass: expected one of"):
        ExtractConfig.from_dict(bad)


@pytest.fixture(scope="module")
def release_with_recipe(tmp_path_factory, release_models):
    """A converted small release whose config names the tiny text model (the release's recipe otherwise)."""
    root = tmp_path_factory.mktemp("recipe_release")
    make_release(root / "tribev2", feature_dims={"text": (2, 16)}, n_outputs=30, n_output_timesteps=10,
                 data=release_data_section(text=str(release_models["text"])))
    convert_tribev2(root / "tribev2", root / "nforge")
    return root


def story(n=24, timeline="story"):
    from extract_helpers import WORDS

    return add_context(make_events([{"type": "Word", "start": 0.4 * i, "duration": 0.3, "text": WORDS[i % len(WORDS)],
                                     "timeline": timeline} for i in range(n)]))


def test_converted_release_predicts_with_its_recipe(release_with_recipe, release_models):
    model = NForgeModel.from_pretrained(release_with_recipe / "nforge")
    recipe = model.extract_config
    assert recipe.text.model_id == str(release_models["text"]) and recipe.text.cache_n_layers == 20
    events = story()
    preds, _ = model.predict(events)  # no extraction argument: the release's recipe
    from nforge_jax.inference.segments import timeline_features

    by_recipe = timeline_features(events, extract_config=recipe)["story"]
    np.testing.assert_allclose(preds, model.predict(events, features={"story": by_recipe})[0], rtol=1e-6, atol=1e-6)
    # the same layers without the release's 20-state subselection are other features, other predictions
    plain = ExtractConfig(text=TextConfig(model_id=str(release_models["text"]), layers=(0.5, 0.75, 1.0),
                                          aggregation="group_mean", batch_size=4), modalities=("text",))
    other, _ = model.predict(events, extract_config=plain)
    assert np.abs(other - preds).max() > 1e-3 * np.abs(preds).max()


def test_extract_with_the_checkpoint_recipe_and_refuse_another(release_with_recipe, tmp_path, capsys):
    ckpt = release_with_recipe / "nforge"
    tsv = tmp_path / "events.tsv"
    story().to_csv(tsv, sep="\t", index=False)
    assert nforge(["extract", "--events", str(tsv), "--store", str(tmp_path / "good"), "--checkpoint", str(ckpt),
                   "--no-progress"]) == 0
    recipe = NForgeModel.from_pretrained(ckpt).extract_config.to_dict()
    assert FeatureStore.open(tmp_path / "good").meta("story")["extract_recipe"]["text"] == recipe["text"]
    assert nforge(["predict", "--store", str(tmp_path / "good"), "--checkpoint", str(ckpt), "--out",
                   str(tmp_path / "p1"), "--no-progress"]) == 0
    # clips / chunks per forward change no features: allowed beside --checkpoint, and the store still predicts
    assert nforge(["extract", "--events", str(tsv), "--store", str(tmp_path / "fast"), "--checkpoint", str(ckpt),
                   "--video-batch-size", "16", "--audio-batch-size", "3", "--no-progress"]) == 0
    # and a rerun into a store made with other batch sizes finds its work done
    capsys.readouterr()
    assert nforge(["extract", "--events", str(tsv), "--store", str(tmp_path / "good"), "--checkpoint", str(ckpt),
                   "--video-batch-size", "2", "--no-progress"]) == 0
    assert "0 timelines written, 1 already done" in capsys.readouterr().out
    from nforge_jax.cli import build_parser
    from nforge_jax.extract.run import config_from_args

    args = build_parser().parse_args(["extract", "--events", str(tsv), "--store", str(tmp_path / "y"), "--checkpoint",
                                      str(ckpt), "--video-batch-size", "16", "--audio-batch-size", "3"])
    fast = config_from_args(args)
    assert (fast.video.batch_size, fast.audio.batch_size) == (16, 3) and fast.text == NForgeModel.from_pretrained(
        ckpt).extract_config.text
    assert nforge(["predict", "--store", str(tmp_path / "fast"), "--checkpoint", str(ckpt), "--out",
                   str(tmp_path / "p3"), "--no-progress"]) == 0
    # a store extracted with the same model and layer count but without the release's subselection
    assert nforge(["extract", "--events", str(tsv), "--store", str(tmp_path / "bad"), "--modalities", "text",
                   "--text-model", recipe["text"]["model_id"], "--text-layers", "0.5,0.75,1",
                   "--text-aggregation", "group_mean", "--no-progress"]) == 0
    capsys.readouterr()
    assert nforge(["predict", "--store", str(tmp_path / "bad"), "--checkpoint", str(ckpt), "--out",
                   str(tmp_path / "p2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "text.cache_n_layers: 20 (model) vs None (features)" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2 and not (tmp_path / "p2").exists()
    # a layer setting beside --checkpoint would make features the model was not trained on
    assert nforge(["extract", "--events", str(tsv), "--store", str(tmp_path / "x"), "--checkpoint", str(ckpt),
                   "--text-layers", "1.0"]) == 2
    assert "--text-layers: cannot be combined with --checkpoint" in capsys.readouterr().err
    # the text batch size is part of the recipe (with a pad token other than eos it changes the vectors)
    assert nforge(["extract", "--events", str(tsv), "--store", str(tmp_path / "x"), "--checkpoint", str(ckpt),
                   "--text-batch-size", "8"]) == 2
    assert "--text-batch-size: cannot be combined with --checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_model_is_one_line_and_creates_no_store(tmp_path, capsys):
    tsv = tmp_path / "events.tsv"
    story(3).to_csv(tsv, sep="\t", index=False)
    assert nforge(["extract", "--events", str(tsv), "--store", str(tmp_path / "store"), "--modalities", "text",
                   "--text-model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "store").exists()


def test_negative_start_is_refused_before_anything_is_written(tmp_path):
    events = story(3)
    events.loc[events.index[0], "start"] = -0.5
    with pytest.raises(ValueError, match="starts at -0.5 s"):
        extract_events(events, tmp_path / "store", ExtractConfig(modalities=("text",), progress=False))
    assert not (tmp_path / "store").exists()


def test_training_records_the_store_recipe(release_models, tmp_path):
    from nforge_jax.data.provenance import store_recipe

    cfg = ExtractConfig(text=TextConfig(model_id=str(release_models["text"]), layers=(0.5, 1.0)),
                        modalities=("text",), progress=False)
    extract_events(story(6, "a"), tmp_path / "s", cfg)
    extract_events(story(6, "b"), tmp_path / "s", cfg)
    store = FeatureStore.open(tmp_path / "s")
    assert ExtractConfig.from_dict(store_recipe(store, ["a", "b"])).text == cfg.text
    other = ExtractConfig(text=TextConfig(model_id=str(release_models["text"]), layers=(0.25, 1.0)),
                          modalities=("text",), progress=False)
    extract_events(story(6, "c"), store, other)
    with pytest.raises(ValueError, match="'a' and 'c'.*text.layers"):
        store_recipe(store, ["a", "b", "c"])


def test_two_processes_extract_one_store(release_models, tmp_path):
    """`nforge extract` in 2 independent processes (one by --shard, one by SLURM's variables) on one store:
    each timeline written once, the store equal to one process's."""
    events = make_events([row for t in range(4) for row in story(5, f"t{t}").to_dict("records")])
    tsv = tmp_path / "events.tsv"
    events.to_csv(tsv, sep="\t", index=False)
    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    base.pop("SLURM_NTASKS", None)
    cmd = [sys.executable, "-m", "nforge_jax.cli", "extract", "--events", str(tsv), "--store", str(tmp_path / "shared"),
           "--modalities", "text", "--text-model", str(release_models["text"]), "--text-layers", "0.5,1",
           "--no-progress"]
    procs = [subprocess.Popen(cmd + ["--shard", "0/2"], env=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True),
             subprocess.Popen(cmd, env={**base, "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("2 timelines written" in o for o in outs), outs
    one = tmp_path / "one"
    extract_events(events, one, ExtractConfig(text=TextConfig(model_id=str(release_models["text"]), layers=(0.5, 1.0)),
                                              modalities=("text",), progress=False))
    shared, single = FeatureStore.open(tmp_path / "shared"), FeatureStore.open(one)
    assert shared.timelines == single.timelines == ["t0", "t1", "t2", "t3"] and not shared.verify()
    for t in single.timelines:
        np.testing.assert_array_equal(shared.features(t, "text"), single.features(t, "text"))


def test_clips_and_chunks_per_forward_are_not_compared():
    """Video clips and audio chunks per forward change no feature (neither is padded), so a store extracted with
    other batch sizes, or recorded before audio chunks were batched, matches; the text batch size is compared."""
    release = ExtractConfig.tribev2_release()
    faster = dataclasses.replace(release, audio=dataclasses.replace(release.audio, batch_size=8),
                                 video=dataclasses.replace(release.video, batch_size=16))
    old = release.to_dict()
    del old["audio"]["batch_size"]  # recorded before the setting existed
    assert recipe_differences(release.to_dict(), faster.to_dict()) == []
    assert recipe_differences(old, faster.to_dict()) == []
    texts = dataclasses.replace(release, text=dataclasses.replace(release.text, batch_size=1))
    assert recipe_differences(release.to_dict(), texts.to_dict()) == ["text.batch_size: 4 (model) vs 1 (features)"]


def test_extract_refuses_a_device_it_cannot_use_before_writing(tiny_models, tmp_path, capsys):
    """A device string that names no device, or a GPU this machine lacks: one line, no store created."""
    from nforge_jax.extract.recipe import ExtractConfig

    with pytest.raises(ValueError, match="ExtractConfig.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"):
        ExtractConfig(device="gpu")
    with pytest.raises(ValueError, match="ExtractConfig.dtype"):
        ExtractConfig(dtype="float64")
    tsv = tmp_path / "events.tsv"
    story().to_csv(tsv, sep="\t", index=False)
    code = nforge(["extract", "--events", str(tsv), "--store", str(tmp_path / "s"), "--modalities", "text",
                   "--text-model", str(tiny_models["text"]), "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "device 'cuda': this torch sees no CUDA GPU" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()
