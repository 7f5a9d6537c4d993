"""Feature extraction (PyTorch + transformers, the ``extract`` extra): media -> 2 Hz features -> FeatureStore.

- ``decode``: PyAV decoding of audio (mono, any rate) and video frames at given times.
- ``text`` / ``audio`` / ``video``: Llama-family LM, Wav2Vec-BERT 2.0, V-JEPA 2 extractors (TRIBE v2's).
- ``hidden_states``: which hidden states (layer fractions, cache_n_layers) and how tokens are reduced.
- ``placement``: vectors and rows on the 2 Hz grid (TRIBE's window overlap rule), media chunking.
- ``models``: offline model resolution, device and dtype, the extractors' shared base class.
- ``recipe``: :class:`ExtractConfig`, every setting that changes the features (it travels with checkpoints
  and stores; ``ExtractConfig.from_tribev2_config`` reads a TRIBE v2 ``config.yaml``).
- ``run``: ``extract_events(events, store, config)`` and the ``nforge extract`` command.

torch and transformers are imported inside functions only: importing these modules stays light.
"""

from nforge_jax.extract.recipe import ExtractConfig, RecipeError

__all__ = ["ExtractConfig", "RecipeError"]
