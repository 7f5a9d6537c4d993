"""nforge_jax: predict cortical fMRI on fsaverage5 from text, audio and video (JAX/Flax TRIBE v2)."""

__version__ = "0.1.0"

__all__ = ["NForgeModel", "__version__"]


def __getattr__(name):
    # Lazy so that `import nforge_jax` stays light (no orbax/transformers until needed).
    if name == "NForgeModel":
        from nforge_jax.inference.model import NForgeModel

        return NForgeModel
    raise AttributeError(f"module 'nforge_jax' has no attribute {name!r}")
