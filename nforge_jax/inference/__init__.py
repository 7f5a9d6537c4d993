"""Prediction from a model, and its evaluation against measured fMRI (``evaluate``)."""

from nforge_jax.inference.evaluate import CEILING_METHODS, Evaluation, evaluate, measured_targets

__all__ = ["evaluate", "Evaluation", "measured_targets", "CEILING_METHODS"]
