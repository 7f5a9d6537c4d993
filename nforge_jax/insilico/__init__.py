"""In-silico experiments: stimuli in named conditions, contrasts between them, tested per output.

`design` reads and checks an experiment file (``plan_experiment``), `run` predicts each stimulus (cached),
summarises it over the response window and tests every contrast (``run_experiment``), `stats` holds the
permutation tests. ``nforge contrast EXPERIMENT.yaml --checkpoint CKPT --out DIR`` is the command line.
"""

from nforge_jax.insilico.design import Design, DesignError, plan_experiment

__all__ = ["Design", "DesignError", "plan_experiment", "run_experiment", "summary_lines"]


def __getattr__(name):  # run.py pulls in prediction; only on use
    if name in ("run_experiment", "summary_lines"):
        from nforge_jax.insilico import run

        return getattr(run, name)
    raise AttributeError(name)
