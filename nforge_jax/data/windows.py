"""Windows of a FeatureStore's timelines and the grain dataset that batches them for training.

An example is one window of a timeline (TRIBE v2, see TRIBEV2_SPEC D.1):

- window k of a timeline starts at ``s = start_s + k * stride_s`` (stride = window = 100 s, no overlap);
  ``ceil(span / stride)`` windows per timeline, the last one kept with a zero-padded tail;
- features: for each modality ``round(window_s * feature_hz)`` = 200 steps at 2 Hz, ``(200, L, D)``
  float32, steps ``round(s * feature_hz) + j`` of the stored array, zeros beyond its end (and zeros for a
  modality the timeline lacks, with ``present[modality] = False``);
- targets: ``round(window_s * fmri_hz)`` = 100 samples at 1 Hz, ``(100, V)``; target ``i`` is the BOLD
  sample at timeline time ``s + i / fmri_hz + offset_s`` (offset 5 s: the response lags the stimulus),
  zeros where there is no recording; ``mask[i]`` is False where the target row is all zeros (TRIBE drops
  those rows from the loss and the metrics);
- ``subject_id``: int index of the timeline's subject (``"<study>/<subject>"``) in ``subjects_index``.

:func:`make_dataset` is the one entry point: window index -> (seeded global shuffle, or per-subject
weighted sampling) -> per-process shard -> load -> batch -> thread or multiprocess prefetch. The stream
is a pure function of (seed, position), so an iterator's ``get_state()``/``set_state()`` (or
``grain.checkpoint.CheckpointSave/Restore`` inside an Orbax checkpoint) resumes the exact same batches.

Rates, the hemodynamic offset and the target index come from :mod:`nforge_jax.data.timebase`; the fMRI in
the store is already 1 Hz targets (:mod:`nforge_jax.data.targets`).
"""

from __future__ import annotations

import collections
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import grain
import numpy as np

from nforge_jax.data import timebase
from nforge_jax.data.splits import store_timelines, subject_key
from nforge_jax.data.store import FeatureStore, PipelineError, StoreError

__all__ = ["WindowSpec", "WindowSource", "list_windows", "make_dataset"]


@dataclass(frozen=True)
class WindowSpec:
    """Window geometry (TRIBE v2 defaults)."""

    window_s: float = timebase.WINDOW_S
    stride_s: float | None = None  # None: = window_s (no overlap)
    feature_hz: float = timebase.FEATURE_HZ
    fmri_hz: float = timebase.FMRI_HZ

    @property
    def n_feature_steps(self) -> int:
        return int(round(self.window_s * self.feature_hz))

    @property
    def n_targets(self) -> int:
        return int(round(self.window_s * self.fmri_hz))

    @property
    def stride(self) -> float:
        return self.window_s if self.stride_s is None else self.stride_s


def _timeline_span(manifest: Mapping) -> tuple[float, float]:
    """(start_s, span_s) of a timeline: meta start_s/duration_s if given, else the longest array."""
    meta, arrays = manifest["meta"], manifest["arrays"]
    start = float(meta.get("start_s", 0.0))
    if meta.get("duration_s") is not None:
        return start, float(meta["duration_s"])
    span = 0.0
    for key, e in arrays.items():
        hz = meta["fmri_hz"] if key == "fmri" else meta["feature_hz"]
        span = max(span, e["shape"][0] / hz)
    return start, span


def list_windows(store: FeatureStore, timelines: Sequence[str], spec: WindowSpec) -> np.ndarray:
    """(n_windows, 2) float64 array of (timeline position in ``timelines``, window start in s)."""
    rows = []
    for i, t in enumerate(timelines):
        start, span = _timeline_span(store.manifest(t))
        n = max(1, math.ceil(span / spec.stride - 1e-9))
        rows.extend((i, start + k * spec.stride) for k in range(n))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


class WindowSource:
    """Random-access source: window id -> example dict (numpy), reading the store's files on demand.

    Picklable (it holds the store path and small tables; files are reopened in each process).
    """

    def __init__(self, store: FeatureStore, timelines: Sequence[str], *, subjects_index: Mapping[str, int],
                 spec: WindowSpec = WindowSpec(), modalities: Mapping[str, tuple[int, int]] | None = None,
                 n_vertices: int | None = None, feature_dtype: str = "float32"):
        self.store_path = str(store.path)
        self.timelines = list(timelines)
        if not self.timelines:
            raise PipelineError(f"no timelines to read from the store {store.path}")
        self.spec = spec
        if feature_dtype not in ("float32", "float16"):
            raise PipelineError(f"feature_dtype: expected 'float32' or 'float16', got {feature_dtype!r}")
        self.feature_dtype = np.dtype(feature_dtype)
        self._store: FeatureStore | None = store
        self._cache: dict[tuple[int, str], tuple] = {}  # (timeline, key) -> (path, offset, shape, dtype)
        shapes: dict[str, dict[tuple, str]] = collections.defaultdict(dict)
        vertices: dict[int, str] = {}
        self._meta = []
        for t in self.timelines:
            m = store.manifest(t)
            meta = m["meta"]
            for field, want in (("feature_hz", spec.feature_hz), ("fmri_hz", spec.fmri_hz)):
                if not math.isclose(meta[field], want):
                    raise PipelineError(f"timeline {t!r}: meta {field} = {meta[field]}, the windows expect {want}")
            key = subject_key(meta)
            if key not in subjects_index:
                raise PipelineError(f"timeline {t!r}: subject {key!r} is not in subjects_index "
                                    f"({len(subjects_index)} subjects, e.g. {list(subjects_index)[:3]})")
            problem = timebase.duration_mismatch(m)
            if problem:
                raise PipelineError(f"timeline {t!r} of {store.path}: {problem}")
            mods = {}
            for k, e in m["arrays"].items():
                if k.startswith("features/"):
                    mods[k[9:]] = e["shape"][0]
                    shapes[k[9:]].setdefault(tuple(e["shape"][1:]), t)
            n_fmri = m["arrays"]["fmri"]["shape"][0] if "fmri" in m["arrays"] else 0
            if n_fmri:
                vertices.setdefault(m["arrays"]["fmri"]["shape"][1], t)
            self._meta.append({"subject_id": int(subjects_index[key]), "modalities": mods, "n_fmri": n_fmri,
                               "offset_s": float(meta["offset_s"]),
                               "fmri_start_s": float(meta.get("fmri_start_s", 0.0))})
        if modalities is None:
            for mod, found in shapes.items():
                if len(found) > 1:
                    (s1, t1), (s2, t2) = list(found.items())[:2]
                    raise PipelineError(f"modality {mod!r}: timeline {t1!r} has (layers, dim) {s1} but {t2!r} "
                                        f"has {s2}; pass modalities= to choose, or re-extract")
            modalities = {mod: next(iter(found)) for mod, found in sorted(shapes.items())}
        else:
            for mod, found in shapes.items():
                bad = [(s, t) for s, t in found.items() if mod in modalities and tuple(modalities[mod]) != s]
                if bad:
                    raise PipelineError(f"modality {mod!r}: timeline {bad[0][1]!r} has (layers, dim) {bad[0][0]}, "
                                        f"expected {tuple(modalities[mod])}")
        self.modalities = {m: tuple(int(x) for x in s) for m, s in modalities.items()}
        if n_vertices is None:
            if len(vertices) > 1:
                raise PipelineError(f"fMRI vertex counts differ across timelines: {vertices}")
            if not vertices:
                raise PipelineError("no timeline has fMRI; pass n_vertices= to make empty targets")
            n_vertices = next(iter(vertices))
        elif vertices and set(vertices) != {n_vertices}:
            raise PipelineError(f"fMRI vertex counts {sorted(vertices)} differ from n_vertices={n_vertices}")
        self.n_vertices = int(n_vertices)
        self.windows = list_windows(store, self.timelines, spec)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        state["_cache"] = {}
        return state

    def __len__(self) -> int:
        return len(self.windows)

    def __repr__(self) -> str:
        return (f"WindowSource({self.store_path!r}, {len(self.timelines)} timelines, {len(self)} windows, "
                f"modalities={self.modalities}, n_vertices={self.n_vertices})")

    def _read_rows(self, t: int, key: str, a: int, b: int, out: np.ndarray) -> None:
        """Read rows [a, b) of a stored array into ``out`` (converting to its dtype) with one pread.

        Positional reads hold no mapping, so memory stays flat however many timelines an epoch visits;
        the file is opened per read (microseconds next to the megabytes read), which keeps concurrent
        reader threads free of shared descriptors.
        """
        loc = self._cache.get((t, key))
        if loc is None:
            if self._store is None:
                self._store = FeatureStore.open(self.store_path)
            loc = self._cache[(t, key)] = self._store.array_file(self.timelines[t], key)
        path, offset, shape, dtype = loc
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        buf = np.empty((b - a, *shape[1:]), dtype=dtype)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise StoreError(f"{path}: cannot open ({e.strerror})") from None
        try:
            got = os.preadv(fd, [memoryview(buf).cast("B")], offset + a * row_bytes)
        finally:
            os.close(fd)
        if got != buf.nbytes:
            raise StoreError(f"{path}: short read ({got} of {buf.nbytes} bytes at row {a}); "
                             "the file changed or is truncated, run `nforge store verify`")
        out[...] = buf

    def empty_batch(self, n: int) -> dict[str, Any]:
        """Zeroed output arrays for ``n`` examples (the layout :meth:`load_batch` fills)."""
        spec = self.spec
        out: dict[str, Any] = {mod: np.zeros((n, spec.n_feature_steps, l, d), dtype=self.feature_dtype)
                               for mod, (l, d) in self.modalities.items()}
        out["fmri"] = np.zeros((n, spec.n_targets, self.n_vertices), dtype=np.float32)
        out["mask"] = np.zeros((n, spec.n_targets), dtype=bool)
        out["subject_id"] = np.zeros((n,), dtype=np.int32)
        out["present"] = {mod: np.zeros((n,), dtype=bool) for mod in self.modalities}
        out["window"] = np.zeros((n, 2), dtype=np.float64)  # (timeline position, window start in s)
        return out

    def _fill(self, index: int, out: dict[str, Any], row: int) -> None:
        t_float, start = self.windows[int(index)]
        t = int(t_float)
        info = self._meta[t]
        spec = self.spec
        n_steps = spec.n_feature_steps
        for mod in self.modalities:
            length = info["modalities"].get(mod)
            out["present"][mod][row] = length is not None
            if length is not None:
                lo = timebase.feature_row(start, spec.feature_hz)
                a, b = max(lo, 0), min(lo + n_steps, length)
                if b > a:
                    self._read_rows(t, mod, a, b, out[mod][row, a - lo:b - lo])
        n_out = spec.n_targets
        y = out["fmri"][row]
        if info["n_fmri"]:
            # target i <- the BOLD sample of stimulus time start + i (the hemodynamic offset later)
            lo = timebase.target_index(start, offset_s=info["offset_s"], fmri_hz=spec.fmri_hz,
                                       fmri_start_s=info["fmri_start_s"])
            a, b = max(lo, 0), min(lo + n_out, info["n_fmri"])
            if b > a:
                self._read_rows(t, "fmri", a, b, y[a - lo:b - lo])
        out["mask"][row] = np.any(y != 0, axis=1)
        out["subject_id"][row] = info["subject_id"]
        out["window"][row] = (t, start)

    def load_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Examples for window ids ``indices``, stacked on a leading batch axis (read in place)."""
        out = self.empty_batch(len(indices))
        for row, index in enumerate(indices):
            self._fill(index, out, row)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.load_batch([index])
        return {k: ({m: x[0] for m, x in v.items()} if isinstance(v, dict) else v[0]) for k, v in batch.items()}


class _ProcessRows:
    """Picklable map: a global batch of window ids -> this process's rows of it."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __call__(self, indices):
        return np.atleast_1d(np.asarray(indices))[self.start : self.stop]


class _LoadBatch:
    """Picklable map: array of window ids -> batch dict."""

    def __init__(self, source: WindowSource):
        self.source = source

    def __call__(self, indices):
        return self.source.load_batch(np.atleast_1d(np.asarray(indices)).tolist())


class _WeightedDraw:
    """Stream position -> window id: subject drawn with probability proportional to its weight, then a
    window of that subject uniformly; a pure function of (seed, position)."""

    def __init__(self, groups: list[np.ndarray], probs: np.ndarray, seed: int):
        self.groups = groups
        self.cdf = np.cumsum(probs) / probs.sum()
        self.seed = int(seed)

    def __call__(self, position):
        rng = np.random.default_rng([self.seed, int(position)])
        g = min(int(np.searchsorted(self.cdf, rng.random(), side="right")), len(self.groups) - 1)
        group = self.groups[g]
        return int(group[rng.integers(len(group))])


def _ensure_absl_flags_parsed() -> None:
    # grain's worker processes read absl flags; outside an absl app they are unparsed and every read raises.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS([sys.argv[0] if sys.argv else "nforge"], known_only=True)


def make_dataset(
    store: FeatureStore | str,
    *,
    subjects_index: Mapping[str, int],
    window_s: float = timebase.WINDOW_S,
    stride_s: float | None = None,
    batch_size: int = 8,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    num_threads: int = 2,
    prefetch_buffer_size: int = 2,
    drop_remainder: bool | None = None,
    timelines: Iterable[str] | None = None,
    weights: Mapping[str, float] | None = None,
    modalities: Mapping[str, tuple[int, int]] | None = None,
    n_vertices: int | None = None,
    feature_dtype: str = "float32",
) -> grain.IterDataset:
    """The training/evaluation input pipeline over a FeatureStore.

    Yields numpy batch dicts: one ``(B, 200, L, D)`` float32 array per modality, ``"fmri"`` (B, 100, V)
    float32, ``"mask"`` (B, 100) bool, ``"subject_id"`` (B,) int32, ``"present"`` {modality: (B,) bool},
    ``"window"`` (B, 2) (timeline position in the timeline list, window start in s).

    - ``shuffle``: seeded global shuffle of all windows, reshuffled each epoch; ``num_epochs=None``
      repeats forever. Without shuffle the order is timelines then time.
    - ``weights``: {subject key: weight}: each example's subject is drawn with probability proportional
      to its weight, then one of its windows uniformly (TRIBE's recording_time weighting, see
      :func:`subject_weights`); an epoch has as many examples as there are windows.
    - ``process_index/process_count``: ``batch_size`` is per process; global batch k is stream positions
      ``[k*G, (k+1)*G)`` with ``G = batch_size * process_count`` and this process reads its block of rows
      (pass ``jax.process_index(), jax.process_count()``), so N processes train on exactly the batches
      one process with batch G would. Every process sees the same number of batches; in a finite stream
      the last one may be short or empty on some processes.
    - ``worker_count > 0``: batches are made in that many worker processes (grain ``mp_prefetch``);
      0 reads with ``num_threads`` threads in this process. The stream depends on ``worker_count``.
    - ``drop_remainder``: default True for an infinite stream, False otherwise.
    - ``feature_dtype="float16"`` hands the stored features over unconverted (half the host memory
      traffic; cast on the device).
    - iterator ``get_state()``/``set_state()`` restore the exact stream position.
    """
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    _check_stream_args(batch_size=batch_size, process_index=process_index, process_count=process_count,
                       worker_count=worker_count, num_threads=num_threads, num_epochs=num_epochs,
                       window_s=window_s, stride_s=stride_s)
    timelines = store_timelines(store, timelines)
    source = WindowSource(store, timelines, subjects_index=subjects_index,
                          spec=WindowSpec(window_s=window_s, stride_s=stride_s), modalities=modalities,
                          n_vertices=n_vertices, feature_dtype=feature_dtype)
    n = len(source)
    if weights is not None:
        total = sys.maxsize if num_epochs is None else n * num_epochs
        ids = grain.MapDataset.range(0, total).map(_weighted_draw(source, subjects_index, weights, seed))
    else:
        ids = grain.MapDataset.range(0, n)
        if shuffle:
            ids = ids.shuffle(seed=seed)
        if num_epochs != 1:
            ids = ids.repeat(num_epochs)
    # batches are formed from window ids and read straight into the batch arrays (no per-example copies)
    drop = (num_epochs is None) if drop_remainder is None else drop_remainder
    ds = _process_batches(ids, batch_size, drop, process_index, process_count).map(_LoadBatch(source))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))
    if worker_count > 0:
        _ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                         per_worker_buffer_size=worker_buffer_size))
    return it


def _process_batches(ids: grain.MapDataset, batch_size: int, drop: bool, process_index: int,
                     process_count: int) -> grain.MapDataset:
    """Window ids -> this process's batches of window ids."""
    if process_count == 1:
        return ids.batch(batch_size, drop_remainder=drop)
    # Global batch k is positions [k*G, (k+1)*G), G = batch_size * process_count; process p reads rows
    # [p*batch_size, (p+1)*batch_size) of it. So N processes assemble exactly the batches (same rows, same
    # order) that one process with batch G reads, and every process sees the same number of batches
    # (the last one of a finite stream may be short or empty on some processes).
    return ids.batch(batch_size * process_count, drop_remainder=drop).map(
        _ProcessRows(process_index * batch_size, (process_index + 1) * batch_size))


def _check_stream_args(*, batch_size, process_index, process_count, worker_count, num_threads, num_epochs,
                       window_s, stride_s) -> None:
    for arg, value, minimum in (("batch_size", batch_size, 1), ("process_count", process_count, 1),
                                ("worker_count", worker_count, 0), ("num_threads", num_threads, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise PipelineError(f"{arg}: expected an integer >= {minimum}, got {value!r}")
    if not (isinstance(process_index, int) and 0 <= process_index < process_count):
        raise PipelineError(f"process_index: expected an integer in [0, {process_count}), got {process_index!r}")
    if num_epochs is not None and (not isinstance(num_epochs, int) or num_epochs < 1):
        raise PipelineError(f"num_epochs: expected None (forever) or an integer >= 1, got {num_epochs!r}")
    if window_s <= 0 or (stride_s is not None and stride_s <= 0):
        raise PipelineError(f"window_s/stride_s: expected > 0, got {window_s!r}/{stride_s!r}")


def _weighted_draw(source: WindowSource, subjects_index: Mapping[str, int], weights: Mapping[str, float],
                   seed: int) -> _WeightedDraw:
    """The draw over ``source``'s windows grouped by subject, each subject weighted by ``weights[key]``."""
    by_subject: dict[int, list[int]] = collections.defaultdict(list)
    sid_to_key = {v: k for k, v in subjects_index.items()}
    for w_id in range(len(source)):
        by_subject[source._meta[int(source.windows[w_id, 0])]["subject_id"]].append(w_id)
    groups, probs = [], []
    for sid, ids in sorted(by_subject.items()):
        key = sid_to_key[sid]
        if key not in weights:
            raise PipelineError(f"weights: no weight for subject {key!r} (weights has {sorted(weights)[:5]})")
        w = weights[key]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise PipelineError(f"weights[{key!r}]: expected a finite number >= 0, got {w!r}")
        if w > 0:
            groups.append(np.asarray(ids, dtype=np.int64))
            probs.append(float(w))
    if not groups:
        raise PipelineError("weights: every subject in the selected timelines has weight 0")
    return _WeightedDraw(groups, np.asarray(probs), seed)
