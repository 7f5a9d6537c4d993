"""FeatureStore: per-timeline features and fMRI targets on disk, memory-mapped.

Layout of a store directory::

    PATH/
      nforge_store.json                    format marker {"format": "nforge_jax.FeatureStore", "version": 1}
      timelines/
        <sanitised-name>-<sha256[:16]>/    one directory per timeline
          manifest.json                    real name, meta, and per array: file, shape, dtype, sha256
          features.text.<token>.npy        (T_2Hz, n_layers, dim) float16
          features.audio.<token>.npy
          fmri.<token>.npy                 (n_samples_1Hz, n_vertices) float32 or float16

A timeline exists exactly when its ``manifest.json`` exists. Arrays are written under fresh file names
first; the manifest is then replaced atomically (temp file, fsync, ``os.replace``), so readers only ever
see a complete timeline, and overwriting or adding a modality never exposes a half-written state.
Files no manifest refers to (left by an interrupted write) are ignored and removed by the next write
of the same timeline.

Manifests are checked when read: each array's ``file`` is a bare name inside its timeline directory (absolute
paths, ``..`` and symbolic links leading out of the store are refused), entries carry shape, dtype and
sha256, and ``meta.study`` / ``meta.subject`` are present. ``verify`` also reports non-finite values.

Arrays are raw ``.npy`` files read with ``np.load(..., mmap_mode="r", allow_pickle=False)``: nothing is
unpickled and nothing loads a whole timeline into memory. Writes go in row chunks and the checksum
(sha256 of the array's data bytes, C order) is computed while writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from nforge_jax.data import timebase
from nforge_jax.data.spaces import OutputSpace, check_same_space, space_of_meta
from nforge_jax.fsio import fsync_dir

__all__ = [
    "FeatureStore",
    "StoreError",
    "format_info",
    "format_verify",
    "CHUNK_BYTES",
]

FORMAT_NAME = "nforge_jax.FeatureStore"
FORMAT_VERSION = 1
MARKER_FILE = "nforge_store.json"
TIMELINES_DIR = "timelines"
MANIFEST_FILE = "manifest.json"
# Bytes per write/read chunk: bounded memory whatever the array size.
CHUNK_BYTES = 64 * 1024 * 1024
FEATURE_DTYPE = np.dtype("float16")
FMRI_DTYPES = {"float32": np.dtype("float32"), "float16": np.dtype("float16")}
META_DEFAULTS = {"feature_hz": timebase.FEATURE_HZ, "fmri_hz": timebase.FMRI_HZ,
                 "offset_s": timebase.HEMODYNAMIC_OFFSET_S}
_MODALITY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SAFE_CHARS_RE = re.compile(r"[^A-Za-z0-9._-]+")


class StoreError(Exception):
    """A FeatureStore is missing, malformed, or was asked for something it does not hold."""


class PipelineError(ValueError):
    """The store or the arguments cannot make the requested dataset (windows, splits, targets)."""


# ----------------------------------------------------------------------------------------------------
# Atomic files, chunked array writing, streaming checksums


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike):
    """Open a binary file for writing that appears at ``path`` only when complete (temp, fsync, rename).

    On an exception nothing is left behind and an existing file at ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def _atomic_write_json(path: Path, obj: Any) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True).encode())


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, byte offset of the data) of an open .npy file (format 1.0 or 2.0)."""
    version = np.lib.format.read_magic(f)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = reader(f)
    return shape, fortran, dtype, f.tell()


def _rows_per_chunk(row_shape: tuple[int, ...], itemsize: int) -> int:
    row_bytes = max(1, math.prod(row_shape) * itemsize)
    return max(1, CHUNK_BYTES // row_bytes)


def _write_npy(path: Path, array: Any, dtype: np.dtype, *, what: str) -> dict:
    """Write ``array`` (anything sliceable along axis 0 with .shape) to ``path`` as .npy in chunks.

    Returns the manifest entry (shape, dtype, sha256 of the data bytes). Raises StoreError if a value
    is not finite after conversion (NaN in the input, or beyond the float16 range).
    """
    shape = tuple(int(s) for s in array.shape)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    digest = hashlib.sha256()
    try:
        step = _rows_per_chunk(shape[1:], dtype.itemsize)
        for lo in range(0, shape[0], step):
            hi = min(shape[0], lo + step)
            src = np.asarray(array[lo:hi])
            with np.errstate(over="ignore", invalid="ignore"):
                chunk = np.ascontiguousarray(src, dtype=dtype)
            if not np.isfinite(chunk).all():
                local = tuple(int(i) for i in np.argwhere(~np.isfinite(chunk))[0])
                raw = src[local]
                reason = "is not finite" if not np.isfinite(raw) else f"is outside the {dtype.name} range"
                raise StoreError(f"{what}: value {float(raw)} at index {(local[0] + lo, *local[1:])} {reason}; "
                                 f"expected finite values storable as {dtype.name}")
            out[lo:hi] = chunk
            digest.update(chunk.tobytes())
        out.flush()
    finally:
        del out
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return {"file": path.name, "shape": list(shape), "dtype": dtype.name, "sha256": digest.hexdigest()}


def _check_array(array: Any, ndim: int, what: str, layout: str) -> None:
    shape = getattr(array, "shape", None)
    if shape is None:
        raise StoreError(f"{what}: expected an array of shape {layout}, got {type(array).__name__}")
    if len(shape) != ndim:
        raise StoreError(f"{what}: expected {ndim} dimensions {layout}, got shape {tuple(shape)}")
    if any(int(s) == 0 for s in shape):
        raise StoreError(f"{what}: expected a non-empty array {layout}, got shape {tuple(shape)}")
    dtype = getattr(array, "dtype", None)
    if dtype is not None and not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise StoreError(f"{what}: expected a real numeric array, got dtype {dtype}")


def _check_manifest(mpath: Path, manifest: dict) -> None:
    """The fields every reader relies on: meta.study/subject, and per array a file name inside the timeline's
    directory, a shape, a dtype and a checksum. StoreError naming the file and the field."""
    for field in ("study", "subject"):
        value = manifest["meta"].get(field)
        if not isinstance(value, str) or not value:
            raise StoreError(f"{mpath}: field 'meta.{field}' is {value!r}, expected a non-empty string")
    for key, entry in manifest["arrays"].items():
        where = f"{mpath}: field 'arrays.{key}'"
        if key != "fmri" and not (key.startswith("features/") and _MODALITY_RE.match(key[9:])):
            raise StoreError(f"{mpath}: field 'arrays' has key {key!r}, expected 'fmri' or 'features/<modality>'")
        if not isinstance(entry, Mapping):
            raise StoreError(f"{where} is a {type(entry).__name__}, expected a mapping with file, shape, dtype "
                             "and sha256")
        shape = entry.get("shape")
        if not (isinstance(shape, list) and shape and all(type(n) is int and n >= 0 for n in shape)):
            raise StoreError(f"{where}.shape is {shape!r}, expected a list of non-negative integers")
        if entry.get("dtype") not in ("float16", "float32"):
            raise StoreError(f"{where}.dtype is {entry.get('dtype')!r}, expected 'float16' or 'float32'")
        if not isinstance(entry.get("sha256"), str):
            raise StoreError(f"{where}.sha256 is {entry.get('sha256')!r}, expected a hex string")
        _check_file_name(entry.get("file"), f"{where}.file")


def _check_file_name(name: Any, where: str) -> None:
    """A manifest names its arrays by bare file name: nothing that leads outside the timeline directory."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name)):
        raise StoreError(f"{where} is {name!r}, expected a bare file name inside the timeline's directory "
                         "(no absolute path, no '..', no '/')")


def _array_path(tdir: Path, entry: Mapping, where: str) -> Path:
    """The array file of a (checked) manifest entry; StoreError if it is a link leading out of the store."""
    fpath = tdir / entry["file"]
    if fpath.is_symlink():
        target = fpath.resolve()
        root = tdir.resolve().parent.parent
        if root not in target.parents:
            raise StoreError(f"{where}: {fpath} is a symbolic link to {target}, outside the store {root}; "
                             "expected the array file itself")
    return fpath


def timeline_dirname(name: str) -> str:
    """A filesystem-safe, collision-free directory name for a timeline name."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    prefix = _SAFE_CHARS_RE.sub("_", name).strip("._-")[:80] or "timeline"
    return f"{prefix}-{digest}"


# ----------------------------------------------------------------------------------------------------


class FeatureStore:
    """On-disk store of per-timeline features (2 Hz, float16) and fMRI targets (1 Hz), memory-mapped."""

    def __init__(self, path: str | os.PathLike, *, _checked: bool = False):
        if not _checked:
            raise TypeError("use FeatureStore.create(path) or FeatureStore.open(path)")
        self.path = Path(path)
        self._manifest_cache: dict[str, tuple[int, dict]] = {}

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike) -> "FeatureStore":
        """Make a new empty store at ``path`` (an absent path or an empty directory).

        An existing store with no timelines is accepted and returned; anything else raises StoreError.
        """
        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise StoreError(f"{path}: exists and is not a directory; expected a new store location")
            entries = sorted(p.name for p in path.iterdir())
            if entries:
                if MARKER_FILE in entries:
                    store = cls.open(path)
                    if not store.timelines:
                        return store
                    raise StoreError(f"{path}: already a FeatureStore with {len(store.timelines)} "
                                     "timelines; use FeatureStore.open to add to it")
                raise StoreError(f"{path}: directory is not empty ({', '.join(entries[:5])}"
                                 f"{', ...' if len(entries) > 5 else ''}); expected a new or empty directory")
        path.mkdir(parents=True, exist_ok=True)
        (path / TIMELINES_DIR).mkdir(exist_ok=True)
        _atomic_write_json(path / MARKER_FILE, {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return cls(path, _checked=True)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeatureStore":
        """Open an existing store; StoreError naming the file if it is missing or not a store."""
        path = Path(path)
        marker = path / MARKER_FILE
        if not path.is_dir():
            raise StoreError(f"{path}: no such directory; expected a FeatureStore made by FeatureStore.create")
        if not marker.is_file():
            raise StoreError(f"{marker}: missing; {path} is not a FeatureStore")
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{marker}: unreadable or not JSON ({e})") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
            raise StoreError(f"{marker}: field 'format' is {info.get('format') if isinstance(info, dict) else info!r}"
                             f", expected {FORMAT_NAME!r}")
        if info.get("version") != FORMAT_VERSION:
            raise StoreError(f"{marker}: field 'version' is {info.get('version')!r}, expected {FORMAT_VERSION}")
        (path / TIMELINES_DIR).mkdir(exist_ok=True)
        return cls(path, _checked=True)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r})"

    # -- paths and manifests -------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.path / TIMELINES_DIR / timeline_dirname(name)

    def _timeline_dirs(self) -> list[Path]:
        root = self.path / TIMELINES_DIR
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _read_manifest_file(self, mpath: Path) -> dict:
        try:
            st = mpath.stat()
        except FileNotFoundError:
            raise StoreError(f"{mpath}: missing") from None
        key = str(mpath)
        cached = self._manifest_cache.get(key)
        stamp = st.st_mtime_ns ^ (st.st_ino << 1) ^ st.st_size
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{mpath}: unreadable or not JSON ({e})") from None
        for field, kind in (("name", str), ("meta", dict), ("arrays", dict)):
            if not isinstance(manifest, dict) or not isinstance(manifest.get(field), kind):
                raise StoreError(f"{mpath}: field {field!r} missing or not a {kind.__name__}")
        _check_manifest(mpath, manifest)
        self._manifest_cache[key] = (stamp, manifest)
        return manifest

    @property
    def timelines(self) -> list[str]:
        """Sorted names of the finished timelines."""
        names = []
        for d in self._timeline_dirs():
            mpath = d / MANIFEST_FILE
            if mpath.is_file():
                names.append(self._read_manifest_file(mpath)["name"])
        return sorted(names)

    def __contains__(self, name: str) -> bool:
        return (self._dir(name) / MANIFEST_FILE).is_file()

    def __len__(self) -> int:
        return len(self.timelines)

    def manifest(self, name: str) -> dict:
        """The JSON manifest of a timeline (name, meta, arrays with file/shape/dtype/sha256)."""
        mpath = self._dir(name) / MANIFEST_FILE
        if not mpath.is_file():
            raise StoreError(f"timeline {name!r} is not in the store {self.path}")
        manifest = self._read_manifest_file(mpath)
        if manifest["name"] != name:
            raise StoreError(f"{mpath}: field 'name' is {manifest['name']!r}, expected {name!r}")
        return manifest

    def meta(self, name: str) -> dict:
        return self.manifest(name)["meta"]

    def modalities(self, name: str) -> list[str]:
        return sorted(k.split("/", 1)[1] for k in self.manifest(name)["arrays"] if k.startswith("features/"))

    def _load(self, name: str, key: str) -> np.ndarray:
        manifest = self.manifest(name)
        entry = manifest["arrays"][key]
        fpath = _array_path(self._dir(name), entry, f"timeline {name!r} {key}")
        try:
            arr = np.load(fpath, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise StoreError(f"{fpath}: missing (timeline {name!r}, array {key!r})") from None
        except (OSError, ValueError) as e:
            raise StoreError(f"{fpath}: unreadable or truncated .npy ({e}); run `nforge store verify`") from None
        if list(arr.shape) != entry["shape"] or arr.dtype.name != entry["dtype"]:
            raise StoreError(f"{fpath}: holds {arr.dtype.name}{list(arr.shape)}, manifest expects "
                             f"{entry['dtype']}{entry['shape']}")
        return arr

    def array_file(self, name: str, key: str) -> tuple[Path, int, tuple[int, ...], np.dtype]:
        """(path, byte offset of the data, shape, dtype) of one stored array, for direct positional reads.

        ``key`` is ``"fmri"`` or a modality name. The header is checked against the manifest and the
        file size against the shape (StoreError naming the file if it is truncated).
        """
        manifest = self.manifest(name)
        akey = key if key == "fmri" else f"features/{key}"
        if akey not in manifest["arrays"]:
            raise StoreError(f"timeline {name!r} has no {key!r} array; it has {sorted(manifest['arrays'])}")
        entry = manifest["arrays"][akey]
        fpath = _array_path(self._dir(name), entry, f"timeline {name!r} {akey}")
        try:
            with open(fpath, "rb") as f:
                shape, fortran, dtype, offset = _read_npy_header(f)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise StoreError(f"{fpath}: missing (timeline {name!r}, array {akey!r})") from None
        except (OSError, ValueError) as e:
            raise StoreError(f"{fpath}: unreadable .npy header ({e})") from None
        if list(shape) != entry["shape"] or dtype.name != entry["dtype"] or fortran:
            raise StoreError(f"{fpath}: holds {dtype.name}{list(shape)}, manifest expects "
                             f"{entry['dtype']}{entry['shape']}")
        if size < offset + math.prod(shape) * dtype.itemsize:
            raise StoreError(f"{fpath}: truncated: {size} bytes, expected {offset + math.prod(shape) * dtype.itemsize}")
        return fpath, offset, tuple(shape), dtype

    def features(self, name: str, modality: str) -> np.ndarray:
        """Read-only memmap (T, n_layers, dim) float16 of one modality."""
        key = f"features/{modality}"
        if key not in self.manifest(name)["arrays"]:
            raise StoreError(f"timeline {name!r} has no {modality!r} features; it has {self.modalities(name)}")
        return self._load(name, key)

    def fmri(self, name: str) -> np.ndarray | None:
        """Read-only memmap (n_samples, n_vertices), or None if the timeline has no fMRI."""
        if "fmri" not in self.manifest(name)["arrays"]:
            return None
        return self._load(name, "fmri")

    def timeline_space(self, name: str) -> OutputSpace | None:
        """The output space of a timeline's fMRI columns: ``meta["space"]``, else inferred from its fMRI's
        column count (`data.spaces.space_of_meta`); None for a timeline that names none and has no fMRI."""
        manifest = self.manifest(name)
        fmri = manifest["arrays"].get("fmri")
        if "space" not in manifest["meta"] and fmri is None:
            return None
        return space_of_meta(manifest["meta"], None if fmri is None else fmri["shape"][1], f"timeline {name!r}")

    def output_space(self, names: Iterable[str] | None = None) -> OutputSpace | None:
        """The one output space of the given (default: all) timelines; SpaceMismatch naming two timelines
        when they differ, None when none of them names or implies one."""
        first, first_name = None, None
        for name in self.timelines if names is None else names:
            space = self.timeline_space(name)
            if space is None:
                continue
            if first is None:
                first, first_name = space, name
                continue
            check_same_space(first, space, expected_what=f"timeline {first_name!r} of {self.path}",
                             got_what=f"timeline {name!r}")
        return first

    # -- writing -------------------------------------------------------------------------------------

    @staticmethod
    def _check_meta(name: str, meta: Mapping) -> dict:
        if not isinstance(meta, Mapping):
            raise StoreError(f"timeline {name!r}: meta must be a dict, got {type(meta).__name__}")
        meta = dict(meta)
        for field in ("study", "subject"):
            if not isinstance(meta.get(field), str) or not meta[field]:
                raise StoreError(f"timeline {name!r}: meta field {field!r} is {meta.get(field)!r}, "
                                 "expected a non-empty string")
        for field, default in META_DEFAULTS.items():
            meta.setdefault(field, default)
        for field in ("tr_s", *META_DEFAULTS):
            value = meta.get(field)
            if field == "tr_s" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise StoreError(f"timeline {name!r}: meta field {field!r} is {value!r}, expected a number")
            if field != "offset_s" and value <= 0:
                raise StoreError(f"timeline {name!r}: meta field {field!r} is {value!r}, expected > 0")
            meta[field] = float(value)
        extractors = meta.get("extractors", {})
        if not isinstance(extractors, Mapping):
            raise StoreError(f"timeline {name!r}: meta field 'extractors' must be a dict modality -> "
                             f"{{model_id, layer_fractions, aggregation}}, got {type(extractors).__name__}")
        try:
            return json.loads(json.dumps(meta, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise StoreError(f"timeline {name!r}: meta is not JSON-serialisable ({e})") from None

    @staticmethod
    def _check_modality(name: str, modality: str) -> None:
        if not isinstance(modality, str) or not _MODALITY_RE.match(modality):
            raise StoreError(f"timeline {name!r}: modality name {modality!r} must match [a-z][a-z0-9_]*")

    def _commit(self, tdir: Path, manifest: dict) -> None:
        _atomic_write_json(tdir / MANIFEST_FILE, manifest)
        keep = {e["file"] for e in manifest["arrays"].values()} | {MANIFEST_FILE}
        for p in tdir.iterdir():
            if p.name not in keep:  # superseded arrays and leftovers of interrupted writes
                p.unlink(missing_ok=True)

    @staticmethod
    def _durations(meta: dict, arrays: dict) -> float:
        dur = 0.0
        for key, entry in arrays.items():
            hz = meta["fmri_hz"] if key == "fmri" else meta["feature_hz"]
            dur = max(dur, entry["shape"][0] / hz)
        return dur

    def write_timeline(
        self,
        name: str,
        *,
        features: Mapping[str, Any] | None = None,
        fmri: Any = None,
        meta: Mapping,
        overwrite: bool = False,
        fmri_dtype: str = "float32",
    ) -> dict:
        """Write one timeline atomically; returns its manifest.

        features: modality -> (T_2Hz, n_layers, dim), stored float16. fmri: (n_samples_1Hz, n_vertices),
        stored as ``fmri_dtype`` (float32 or float16). Arrays may be memmaps or any object sliceable along
        axis 0; they are copied in chunks.
        """
        if not isinstance(name, str) or not name:
            raise StoreError(f"timeline name must be a non-empty string, got {name!r}")
        features = dict(features or {})
        if not features and fmri is None:
            raise StoreError(f"timeline {name!r}: nothing to write; expected features and/or fmri")
        meta = self._check_meta(name, meta)
        if fmri_dtype not in FMRI_DTYPES:
            raise StoreError(f"timeline {name!r}: fmri_dtype {fmri_dtype!r}, expected one of {sorted(FMRI_DTYPES)}")
        for modality, arr in features.items():
            self._check_modality(name, modality)
            _check_array(arr, 3, f"timeline {name!r} features[{modality!r}]", "(T, n_layers, dim)")
        if fmri is not None:
            _check_array(fmri, 2, f"timeline {name!r} fmri", "(n_samples, n_vertices)")
        if "space" in meta:  # a recorded space must describe the fMRI's columns
            try:
                space_of_meta(meta, None if fmri is None else int(fmri.shape[1]), f"timeline {name!r}")
            except ValueError as e:
                raise StoreError(str(e)) from None
        tdir = self._dir(name)
        mpath = tdir / MANIFEST_FILE
        if mpath.is_file() and not overwrite:
            raise StoreError(f"timeline {name!r} already exists in {self.path} ({tdir.name}); "
                             "pass overwrite=True to replace it")
        tdir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(4)
        arrays: dict[str, dict] = {}
        written: list[Path] = []
        try:
            for modality, arr in sorted(features.items()):
                fpath = tdir / f"features.{modality}.{token}.npy"
                written.append(fpath)
                arrays[f"features/{modality}"] = _write_npy(
                    fpath, arr, FEATURE_DTYPE, what=f"timeline {name!r} features[{modality!r}]")
            if fmri is not None:
                fpath = tdir / f"fmri.{token}.npy"
                written.append(fpath)
                arrays["fmri"] = _write_npy(fpath, fmri, FMRI_DTYPES[fmri_dtype], what=f"timeline {name!r} fmri")
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "meta": meta,
            "arrays": arrays,
            "duration_s": self._durations(meta, arrays),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._commit(tdir, manifest)
        return manifest

    def add_features(self, name: str, modality: str, array: Any) -> dict:
        """Add or replace one modality of an existing timeline (atomic); returns the new manifest."""
        self._check_modality(name, modality)
        manifest = json.loads(json.dumps(self.manifest(name)))
        _check_array(array, 3, f"timeline {name!r} features[{modality!r}]", "(T, n_layers, dim)")
        tdir = self._dir(name)
        fpath = tdir / f"features.{modality}.{secrets.token_hex(4)}.npy"
        try:
            manifest["arrays"][f"features/{modality}"] = _write_npy(
                fpath, array, FEATURE_DTYPE, what=f"timeline {name!r} features[{modality!r}]")
        except BaseException:
            fpath.unlink(missing_ok=True)
            raise
        manifest["duration_s"] = self._durations(manifest["meta"], manifest["arrays"])
        manifest["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._commit(tdir, manifest)
        return manifest

    def delete_timeline(self, name: str) -> None:
        """Remove a timeline (the manifest goes first, so it disappears atomically)."""
        tdir = self._dir(name)
        if not (tdir / MANIFEST_FILE).is_file():
            raise StoreError(f"timeline {name!r} is not in the store {self.path}")
        (tdir / MANIFEST_FILE).unlink()
        fsync_dir(tdir)
        shutil.rmtree(tdir, ignore_errors=True)

    # -- checking ------------------------------------------------------------------------------------

    def _verify_array(self, name: str, key: str, entry: Mapping, tdir: Path) -> list[str]:
        try:
            fpath = _array_path(tdir, entry, f"timeline {name!r} {key}")
        except StoreError as e:
            return [str(e)]
        where = f"{fpath} (timeline {name!r}, {key})"
        if not fpath.is_file():
            return [f"{where}: file missing"]
        try:
            with open(fpath, "rb") as f:
                shape, fortran, dtype, data_offset = _read_npy_header(f)
        except (OSError, ValueError) as e:
            return [f"{where}: not a readable .npy file ({e})"]
        problems = []
        if list(shape) != list(entry.get("shape", [])) or dtype.name != entry.get("dtype") or fortran:
            problems.append(f"{where}: holds {dtype.name}{list(shape)}{' (Fortran order)' if fortran else ''}, "
                            f"manifest expects {entry.get('dtype')}{entry.get('shape')}")
            return problems
        expected = data_offset + math.prod(shape) * dtype.itemsize
        size = fpath.stat().st_size
        if size < expected:
            return [f"{where}: truncated: {size} bytes, expected {expected}"]
        if size > expected:
            problems.append(f"{where}: {size - expected} unexpected trailing bytes")
        digest = hashlib.sha256()
        row_items = math.prod(shape[1:])
        first_bad = None
        with open(fpath, "rb") as f:
            f.seek(data_offset)
            remaining = expected - data_offset
            done_items = 0
            while remaining:
                block = f.read(min(CHUNK_BYTES - CHUNK_BYTES % dtype.itemsize, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
                values = np.frombuffer(block, dtype)
                if first_bad is None and np.issubdtype(dtype, np.floating) and not np.isfinite(values).all():
                    first_bad = done_items + int(np.flatnonzero(~np.isfinite(values))[0])
                    bad_value = values[first_bad - done_items]
                done_items += len(values)
        if first_bad is not None:
            problems.append(f"{where}: value {bad_value} at row {first_bad // max(row_items, 1)} is not finite; "
                            "expected finite values (predictions from it would be NaN)")
        if digest.hexdigest() != entry.get("sha256"):
            problems.append(f"{where}: checksum mismatch (sha256 {digest.hexdigest()[:16]}..., "
                            f"manifest {str(entry.get('sha256'))[:16]}...)")
        return problems

    def verify(self, name: str | None = None) -> list[str]:
        """Check files against manifests (presence, shape, truncation, sha256). [] when sound."""
        problems: list[str] = []
        if name is not None:
            dirs = [self._dir(name)]
            if not (dirs[0] / MANIFEST_FILE).is_file():
                return [f"timeline {name!r} is not in the store {self.path}"]
        else:
            dirs = self._timeline_dirs()
        for tdir in dirs:
            mpath = tdir / MANIFEST_FILE
            if not mpath.is_file():
                continue  # an interrupted first write: not a timeline, nothing to check
            try:
                manifest = self._read_manifest_file(mpath)
            except StoreError as e:
                problems.append(str(e))
                continue
            if timeline_dirname(manifest["name"]) != tdir.name:
                problems.append(f"{mpath}: name {manifest['name']!r} does not belong in directory {tdir.name}")
            for key, entry in sorted(manifest["arrays"].items()):
                if not isinstance(entry, Mapping):
                    problems.append(f"{mpath}: arrays[{key!r}] is not an object")
                    continue
                problems.extend(self._verify_array(manifest["name"], key, entry, tdir))
        return problems

    def info(self) -> dict:
        """Summary: timelines, studies, subjects, hours (of fMRI and of features), modalities and shapes."""
        studies: dict[str, dict] = {}
        modalities: dict[str, dict] = {}
        total = {"fmri_hours": 0.0, "feature_hours": 0.0, "bytes": 0}
        vertices: set[int] = set()
        names = self.timelines
        for name in names:
            m = self.manifest(name)
            meta, arrays = m["meta"], m["arrays"]
            s = studies.setdefault(meta["study"], {"timelines": 0, "subjects": set(), "fmri_hours": 0.0,
                                                   "feature_hours": 0.0})
            s["timelines"] += 1
            s["subjects"].add(meta["subject"])
            fh = arrays["fmri"]["shape"][0] / meta["fmri_hz"] / 3600 if "fmri" in arrays else 0.0
            feat = [e["shape"][0] for k, e in arrays.items() if k.startswith("features/")]
            xh = max(feat) / meta["feature_hz"] / 3600 if feat else 0.0
            s["fmri_hours"] += fh
            s["feature_hours"] += xh
            total["fmri_hours"] += fh
            total["feature_hours"] += xh
            for key, e in arrays.items():
                total["bytes"] += math.prod(e["shape"]) * np.dtype(e["dtype"]).itemsize
                if key == "fmri":
                    vertices.add(e["shape"][1])
                else:
                    mod = modalities.setdefault(key.split("/", 1)[1], {"timelines": 0, "shapes": set()})
                    mod["timelines"] += 1
                    mod["shapes"].add(tuple(e["shape"][1:]))
        subjects = sorted({f"{st}/{sub}" for st, s in studies.items() for sub in s["subjects"]})
        return {
            "path": str(self.path),
            "n_timelines": len(names),
            "n_subjects": len(subjects),
            "subjects": subjects,
            "studies": {k: {**v, "subjects": sorted(v["subjects"])} for k, v in sorted(studies.items())},
            "modalities": {k: {"timelines": v["timelines"], "layers_dim": sorted(list(s) for s in v["shapes"])}
                           for k, v in sorted(modalities.items())},
            "n_vertices": sorted(vertices),
            **total,
        }


# ----------------------------------------------------------------------------------------------------
# Text for `nforge store info PATH` and `nforge store verify PATH` (printed by cli.py)


def format_info(store: FeatureStore) -> str:
    """Human-readable summary of :meth:`FeatureStore.info`."""
    i = store.info()
    lines = [
        f"FeatureStore {i['path']}",
        f"  timelines: {i['n_timelines']}   subjects: {i['n_subjects']}   "
        f"fMRI: {i['fmri_hours']:.2f} h   features: {i['feature_hours']:.2f} h   "
        f"size: {i['bytes'] / 2**30:.2f} GiB",
        f"  vertices: {', '.join(map(str, i['n_vertices'])) or '-'}",
        "  studies:",
    ]
    for study, s in i["studies"].items():
        lines.append(f"    {study}: {s['timelines']} timelines, {len(s['subjects'])} subjects, "
                     f"{s['fmri_hours']:.2f} h fMRI, {s['feature_hours']:.2f} h features")
    if not i["studies"]:
        lines.append("    (none)")
    lines.append("  modalities (layers x dim):")
    for mod, m in i["modalities"].items():
        shapes = ", ".join("x".join(map(str, s)) for s in m["layers_dim"])
        lines.append(f"    {mod}: {shapes} in {m['timelines']} timelines")
    if not i["modalities"]:
        lines.append("    (none)")
    return "\n".join(lines)


def format_verify(problems: Iterable[str], store: FeatureStore) -> str:
    problems = list(problems)
    if not problems:
        return f"OK: {len(store.timelines)} timelines in {store.path} verified"
    return "\n".join([*problems, f"FAILED: {len(problems)} problem(s) in {store.path}"])
