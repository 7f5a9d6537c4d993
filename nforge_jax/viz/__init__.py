"""Figures (surface, roi), activity movies (movie) and the interactive browser viewer (view).

`view_predictions` is loaded on first use, so importing this package stays light.
"""

__all__ = ["view_predictions"]


def __getattr__(name):
    if name == "view_predictions":
        from nforge_jax.viz.view import view_predictions

        return view_predictions
    raise AttributeError(f"module 'nforge_jax.viz' has no attribute {name!r}")
