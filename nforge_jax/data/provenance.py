"""What made a store's features: the extraction recipe recorded per timeline, compared with a model's.

Every timeline written by ``nforge extract`` records ``meta["extract_recipe"]``: {modality: settings} (the
settings of :class:`nforge_jax.extract.recipe.ExtractConfig`, model id included). A model records the
recipe its features came from (``metadata["extract_recipe"]``). Prediction refuses a timeline whose
features were made another way, naming the first setting that differs: a head trained on one recipe gives
plausible but wrong maps on another.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

__all__ = ["recipe_differences", "timeline_recipe", "check_store_recipe", "store_recipe"]


def _norm(value):
    if isinstance(value, (list, tuple)):
        return tuple(float(x) if isinstance(x, (int, float)) else x for x in value)
    return value


# Settings that cannot change the features: the model id (a local copy of the same model is fine) and the
# number of video clips or audio chunks per forward (neither pads). The text batch size is compared: with a
# tokenizer whose pad token is not eos, the release's rule makes a word's vector depend on its batch.
NOT_COMPARED = {"model_id": ("text", "audio", "video"), "batch_size": ("audio", "video")}
# Settings added after recipes were first recorded, with the value every earlier recipe had: a recipe without
# the field was made that way (extract.text.TextConfig's default, kept here: data/ does not import extract/).
ADDED_SETTINGS = {("text", "context_pass"): "per_word"}


def _setting(settings: Mapping, modality: str, field: str):
    return settings.get(field, ADDED_SETTINGS.get((modality, field)))


def recipe_differences(expected: Mapping, actual: Mapping, modalities: Sequence[str] | None = None) -> list[str]:
    """``modality.field: expected vs actual`` for every feature-changing setting that differs, for the
    modalities both recipes describe."""
    out = []
    for m in modalities if modalities is not None else sorted(set(expected) & set(actual)):
        a, b = expected.get(m), actual.get(m)
        if not isinstance(a, Mapping) or not isinstance(b, Mapping):
            continue
        for k in sorted(set(a) | set(b)):
            skip = m in NOT_COMPARED.get(k, ())
            va, vb = _setting(a, m, k), _setting(b, m, k)
            if not skip and _norm(va) != _norm(vb):
                out.append(f"{m}.{k}: {va!r} (model) vs {vb!r} (features)")
    return out


def timeline_recipe(meta: Mapping) -> dict:
    """{modality: settings} a timeline's features were extracted with ({} when the store does not say)."""
    recipe = meta.get("extract_recipe")
    return dict(recipe) if isinstance(recipe, Mapping) else {}


def check_store_recipe(store, names: Sequence[str], recipe: Mapping | None, *, allow: bool = False) -> list[str]:
    """ValueError naming the first timeline (and setting) whose features were extracted with another recipe.
    ``recipe=None`` (a model that does not record one) checks nothing. ``allow``: a deliberate pairing (the
    caller records it): returns one note per such timeline instead of raising."""
    if not recipe:
        return []
    unchecked, notes = [], []
    for name in names:
        if name not in store:
            continue
        stored = timeline_recipe(store.meta(name))
        if not stored and store.modalities(name):
            unchecked.append(name)
        diff = recipe_differences(recipe, stored, store.modalities(name))
        if diff and allow:
            notes.append(f"timeline {name!r}: features of another recipe than the model's ({'; '.join(diff[:3])})")
        elif diff:
            raise ValueError(f"timeline {name!r} of {store.path}: its features were extracted with another recipe "
                             f"than the model's ({'; '.join(diff[:3])}); extract again with "
                             "`nforge extract --checkpoint CHECKPOINT` into a new store, or pass "
                             "--allow-other-recipe (allow_other_recipe=True) to predict them anyway")
    if unchecked:
        warnings.warn(f"{len(unchecked)} timelines of {store.path} (e.g. {unchecked[0]!r}) record no extraction recipe "
                      "(extracted before recipes were recorded): their features cannot be checked against the "
                      "model's", stacklevel=2)
    return notes


def store_recipe(store, names: Sequence[str]) -> dict | None:
    """The recipe the features of ``names`` share, in the form a checkpoint records
    ({"format": 1, "modalities": [...], modality: settings}); None when no timeline records one. Timelines
    extracted with different settings are an error naming both: a model trained on them has no recipe."""
    merged: dict = {}
    first: dict = {}
    for name in names:
        for m, settings in timeline_recipe(store.meta(name)).items():
            if m not in merged:
                merged[m], first[m] = settings, name
                continue
            diff = recipe_differences({m: merged[m]}, {m: settings})
            if diff:
                raise ValueError(f"timelines {first[m]!r} and {name!r} of {store.path} were extracted with different "
                                 f"{m} settings ({diff[0]}); train on features of one recipe")
    if not merged:
        return None
    return {"format": 1, "modalities": sorted(merged), **merged}
