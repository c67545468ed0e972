"""convscope's TensorBoard plugin: the unit browser (every unit of the browsed layers, at every drawn epoch).

It reads the files ``UnitsCallback`` writes beside a run's event file (``<run>/convscope_units/<layer>/epoch_NNNN/``,
format in docs/browser.md) and serves them as JSON and PNG under ``/data/plugin/convscope/``:

    /runs                                 runs with convscope data, their layers and epochs (+ runs without data)
    /grid?run=R&layer=L[&epoch=E]         every unit of a layer at one epoch (latest by default): its numbers
    /unit?run=R&layer=L&unit=U            one unit across all drawn epochs + its life line
    /sprite?run=R&layer=L&epoch=E&kind=top|actmax|filters&chunk=C      a sprite PNG (256 units a chunk)

This module imports only the standard library, werkzeug and tensorboard: an exception or a slow import here would
take TensorBoard down for every user. ``is_active`` answers from a cached scan done in a background thread. No
request reads outside the logdir: runs and layers are looked up among the folders found by the scan, file names
are built here from validated integers, and every resolved path must stay inside the resolved logdir.
"""

from __future__ import annotations

import array
import json
import math
import os
import sys
import threading
import time
from collections import OrderedDict

from tensorboard.plugins import base_plugin
from werkzeug import wrappers

PLUGIN_NAME = "convscope"
UNITS_DIR = "convscope_units"
CHUNK = 256  # units per sprite chunk (format version 1)
KINDS = ("top", "actmax", "filters")
STAT_KEYS = ("mean", "selectivity", "preferred_class", "dead_fraction", "importance", "change")
_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_MIME = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png"}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
SCAN_TTL_S = 2.0  # a run still being written shows new epochs on the next request after this
ACTIVE_TTL_S = 30.0  # how old is_active's cached answer may get before a background rescan is started

CACHE_BYTES = 64 << 20  # parsed JSON kept, counted in file bytes (a 2,048-unit stats.json is about 1.5 MB)
SELECTIVE = 0.5  # life line: selectivity index from which a unit counts as selective
DEAD = 0.99  # life line: dead fraction from which a unit counts as dead


class DataError(Exception):
    """A request that cannot be answered from the files (missing, truncated, unknown run/layer): a JSON message."""

    def __init__(self, message: str, code: int = 404):
        super().__init__(message)
        self.code = code


def life_line(history: list[dict], selective: float = SELECTIVE, dead: float = DEAD) -> dict:
    """A unit's life in one line, from its per-epoch numbers (a pure function).

    ``history`` is a list of ``{"epoch", "preferred_class", "selectivity", "dead_fraction"}`` in any order (sorted
    by epoch here); a missing value (None) counts as not meeting a condition. Over the drawn epochs e_1 < ... < e_n:

    - ``settled``: the first e_i from which ``preferred_class`` equals its value at e_n at every later drawn epoch
      (so e_1 when it never changed), None when there is no drawing or the last preferred class is unknown;
    - ``selective``: the first e_i from which ``selectivity >= selective`` at every later drawn epoch, None when
      the last drawing is below it;
    - ``died``: the first e_i from which ``dead_fraction >= dead`` at every later drawn epoch, None when the unit
      is alive at the last drawing (a unit that died and came back did not die);
    - ``preferred_class``: the last preferred class; ``epochs``: the number of drawings; the thresholds used.

    One drawing settles and decides nothing more than that drawing; the frontend says so.
    """
    rows = sorted(history, key=lambda r: r["epoch"])

    def first_of_last_streak(ok) -> int | None:
        start = None
        for row in reversed(rows):
            if not ok(row):
                break
            start = row["epoch"]
        return start

    last_class = rows[-1].get("preferred_class") if rows else None
    settled = None
    if last_class is not None:
        settled = first_of_last_streak(lambda r: r.get("preferred_class") == last_class)

    def at_least(key, threshold):
        return lambda r: r.get(key) is not None and r[key] >= threshold

    return {
        "settled": settled,
        "selective": first_of_last_streak(at_least("selectivity", selective)),
        "died": first_of_last_streak(at_least("dead_fraction", dead)),
        "preferred_class": last_class,
        "epochs": len(rows),
        "thresholds": {"selective": selective, "dead": dead},
    }


def _roots(logdir: str | None) -> list[tuple[str, str]]:
    """(run-name prefix, folder) pairs from TensorBoard's ``--logdir`` or ``--logdir_spec`` (``name:path,...``)."""
    if not logdir:
        return []
    if os.path.isdir(logdir):
        return [("", os.path.realpath(logdir))]
    roots = []
    for entry in logdir.split(","):
        name, sep, path = entry.partition(":")
        if not sep or (len(name) == 1 and os.name == "nt"):
            name, path = "", entry
        if os.path.isdir(path):
            roots.append((name, os.path.realpath(path)))
    return roots


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _epoch_of(name: str) -> int | None:
    if name.startswith("epoch_") and name[6:].isdigit():
        return int(name[6:])
    return None


class ConvscopePlugin(base_plugin.TBPlugin):
    """The convscope tab: a layer's every unit as a sortable grid, and one unit's life over training."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context):
        flags = getattr(context, "flags", None)
        self._roots = _roots(getattr(context, "logdir", None) or getattr(flags, "logdir_spec", None))
        self._lock = threading.Lock()
        self._runs: dict[str, str] | None = None  # run name -> real path of its folder
        self._without: list[str] = []
        self._scanned_at = 0.0
        self._active = False
        self._active_at = 0.0
        self._scanning = False
        self._json_cache: OrderedDict = OrderedDict()  # (path, mtime_ns, size) -> parsed JSON, least recent first
        self._cached_bytes = 0  # file bytes behind the parsed JSON kept
        self._summaries: dict[str, tuple[int, dict | None]] = {}  # layer folder -> (its mtime, its summary)
        self._start_scan()

    # --- TensorBoard's API ---------------------------------------------------------------------------------------
    def get_plugin_apps(self):
        return {
            "/index.js": self._serve_static,
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/grid": self._serve_grid,
            "/unit": self._serve_unit,
            "/sprite": self._serve_sprite,
        }

    def is_active(self) -> bool:
        """The cached answer of the last scan; never scans here (a background rescan when it is stale)."""
        if time.monotonic() - self._active_at > ACTIVE_TTL_S:
            self._start_scan()
        return self._active

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="convscope units")

    # --- finding runs --------------------------------------------------------------------------------------------
    def _start_scan(self) -> None:
        with self._lock:
            if self._scanning:
                return
            self._scanning = True
        threading.Thread(target=self._scan_safely, name="convscope-scan", daemon=True).start()

    def _scan_safely(self) -> None:
        try:
            self.scan()
        except Exception:  # noqa: BLE001 - a scan failure must not reach TensorBoard; the next request retries
            pass
        finally:
            self._scanning = False

    def scan(self) -> dict[str, str]:
        """Walk the logdir once: every folder holding ``convscope_units/`` is a run (name = its path relative to
        the logdir, TensorBoard's run name); folders with event files but no units are listed as without data."""
        runs, without = {}, []
        for prefix, root in self._roots:
            for folder, dirs, files in os.walk(root):  # followlinks=False: a symlinked folder is never entered
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != UNITS_DIR)
                rel = os.path.relpath(folder, root)
                name = "/".join(p for p in (prefix, "" if rel == "." else rel.replace(os.sep, "/")) if p) or "."
                if os.path.isdir(os.path.join(folder, UNITS_DIR)) and _inside(os.path.join(folder, UNITS_DIR), root):
                    runs[name] = folder
                elif any(f.startswith("events.out.tfevents") for f in files):
                    without.append(name)
        with self._lock:
            self._runs, self._without, self._scanned_at = runs, sorted(without), time.monotonic()
            self._active, self._active_at = bool(runs), time.monotonic()
        return runs

    def _run_folders(self, fresh: bool = False) -> dict[str, str]:
        if fresh or self._runs is None or time.monotonic() - self._scanned_at > SCAN_TTL_S:
            return self.scan()
        return self._runs

    def _run(self, name: str | None) -> tuple[str, str]:
        """(folder, root) of a known run; unknown names (``..``, absolute paths, anything not found) are refused."""
        if not name:
            raise DataError("missing parameter 'run'", 400)
        folder = self._run_folders().get(name) or self._run_folders(fresh=True).get(name)
        if folder is None:
            raise DataError(f"no run {name!r} with convscope data in the logdir", 404)
        root = next(r for _, r in self._roots if _inside(folder, r))
        return folder, root

    def _layer_dir(self, run: str | None, layer: str | None) -> tuple[str, str]:
        folder, root = self._run(run)
        if not layer:
            raise DataError("missing parameter 'layer'", 400)
        units = os.path.join(folder, UNITS_DIR)
        if layer.startswith(".") or "/" in layer or os.sep in layer or layer not in _listdir(units):
            raise DataError(f"run {run!r} has no browsed layer {layer!r}", 404)
        path = os.path.join(units, layer)
        if not _inside(path, root):
            raise DataError(f"layer {layer!r} of run {run!r} points outside the logdir", 403)
        return path, root

    # --- reading the format --------------------------------------------------------------------------------------
    @staticmethod
    def _epochs(layer_dir: str) -> list[int]:
        """Complete epochs of a layer: ``epoch_NNNN`` folders holding both meta.json and stats.json."""
        out = []
        for name in _listdir(layer_dir):
            epoch = _epoch_of(name)
            d = os.path.join(layer_dir, name)
            if epoch is not None and os.path.isfile(os.path.join(d, "meta.json")):
                if os.path.isfile(os.path.join(d, "stats.json")):
                    out.append(epoch)
        return sorted(out)

    def _json(self, path: str, root: str):
        if not _inside(path, root):
            raise DataError(f"{os.path.basename(path)} points outside the logdir", 403)
        try:
            st = os.stat(path)
        except OSError:
            raise DataError(f"missing file {_short(path, root)}", 404) from None
        key = (path, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._json_cache:
                self._json_cache.move_to_end(key)
                return self._json_cache[key]
        try:
            with open(path, encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"unreadable or truncated file {_short(path, root)}: {e}", 500) from None
        with self._lock:
            self._json_cache[key] = value
            self._cached_bytes += st.st_size
            while len(self._json_cache) > 1 and self._cached_bytes > CACHE_BYTES:
                old, _ = self._json_cache.popitem(last=False)
                self._cached_bytes -= old[2]
        return value

    def _epoch_files(self, layer_dir: str, root: str, epoch: int) -> tuple[str, dict, dict]:
        d = os.path.join(layer_dir, f"epoch_{epoch:04d}")
        meta = self._json(os.path.join(d, "meta.json"), root)
        stats = self._json(os.path.join(d, "stats.json"), root)
        units = meta.get("units")
        if not isinstance(units, int) or units < 0:
            raise DataError(f"{_short(d, root)}/meta.json has no unit count", 500)
        for key in ("selectivity", "preferred_class", "dead_fraction", "top"):
            if not isinstance(stats.get(key), list) or len(stats[key]) != units:
                raise DataError(f"{_short(d, root)}/stats.json: {key!r} is not a list of {units} entries", 500)
        return d, meta, stats

    @staticmethod
    def _class_means_row(epoch_dir: str, root: str, meta: dict, unit: int) -> list[float] | None:
        path = os.path.join(epoch_dir, "class_means.f32")
        cols = len(meta.get("class_index") or [])
        if not cols or not os.path.isfile(path) or not _inside(path, root):
            return None
        size = os.path.getsize(path)
        if size != meta["units"] * cols * 4:
            raise DataError(
                f"{_short(path, root)} is {size} bytes, expected {meta['units']} units x {cols} classes x 4", 500
            )
        with open(path, "rb") as f:
            f.seek(unit * cols * 4)
            raw = f.read(cols * 4)
        row = array.array("f")  # float32 little-endian
        row.frombytes(raw)
        if sys.byteorder != "little":
            row.byteswap()
        return [float(f"{v:.7g}") for v in row]  # float32 precision, short JSON

    # --- routes --------------------------------------------------------------------------------------------------
    def runs(self) -> dict:
        runs = []
        for name, folder in sorted(self._run_folders().items()):
            units_dir = os.path.join(folder, UNITS_DIR)
            layers = []
            for layer in _listdir(units_dir):
                if not layer.startswith("."):
                    summary = self._layer_summary(os.path.join(units_dir, layer), folder)
                    if summary is not None:
                        layers.append({"layer": layer, **summary})
            runs.append({"run": name, "layers": layers})
        return {"runs": runs, "without_data": list(self._without), "logdir": [r for _, r in self._roots]}

    def _layer_summary(self, layer_dir: str, folder: str) -> dict | None:
        """A layer's complete epochs, epochs with actmax, unit count and kind; cached until the layer folder changes
        (the writer renames each finished epoch folder into it, which changes the folder's mtime): a listing of
        100 runs costs one stat per layer."""
        try:
            st = os.stat(layer_dir)
        except OSError:
            return None
        cached = self._summaries.get(layer_dir)
        if cached is not None and cached[0] == st.st_mtime_ns:
            return cached[1]
        epochs = self._epochs(layer_dir)
        summary = None
        if epochs:
            root = next(r for _, r in self._roots if _inside(folder, r))
            try:
                meta = self._json(os.path.join(layer_dir, f"epoch_{epochs[-1]:04d}", "meta.json"), root)
            except DataError:
                meta = {}
            has = [e for e in epochs if os.path.isfile(os.path.join(layer_dir, f"epoch_{e:04d}", "actmax_000.png"))]
            summary = {"epochs": epochs, "actmax_epochs": has, "units": meta.get("units"), "kind": meta.get("kind")}
            summary["of"] = meta.get("of", meta.get("units"))  # the layer's units; "units" of them are browsed
        self._summaries[layer_dir] = (st.st_mtime_ns, summary)
        return summary

    def grid(self, run, layer, epoch) -> dict:
        layer_dir, root = self._layer_dir(run, layer)
        epochs = self._epochs(layer_dir)
        if not epochs:
            raise DataError(f"layer {layer!r} of run {run!r} has no complete epoch yet", 404)
        e = epochs[-1] if epoch is None else _int(epoch, "epoch")
        if e not in epochs:
            raise DataError(f"layer {layer!r} of run {run!r} was not drawn at epoch {e}; drawn: {epochs}", 404)
        d, meta, stats = self._epoch_files(layer_dir, root, e)
        units = meta["units"]
        cols = {
            k: stats.get(k) if isinstance(stats.get(k), list) and len(stats[k]) == units else None for k in STAT_KEYS
        }
        return {
            "run": run,
            "layer": layer,
            "epoch": e,
            "epochs": epochs,
            "meta": meta,
            "stats": cols,
            "top_value": [t[0]["value"] if t else None for t in stats["top"]],
            "sprites": _sprites(meta, d),
        }

    def unit(self, run, layer, unit) -> dict:
        layer_dir, root = self._layer_dir(run, layer)
        u = _int(unit, "unit")
        epochs = self._epochs(layer_dir)
        if not epochs:
            raise DataError(f"layer {layer!r} of run {run!r} has no complete epoch yet", 404)
        history, meta = [], {}
        for e in epochs:
            d, meta, stats = self._epoch_files(layer_dir, root, e)
            if not 0 <= u < meta["units"]:
                raise DataError(f"layer {layer!r} has {meta['units']} units (0..{meta['units'] - 1}); got {u}", 404)
            row = {"epoch": e}
            for k in STAT_KEYS:
                col = stats.get(k)
                row[k] = col[u] if isinstance(col, list) and len(col) == meta["units"] else None
            row["top"] = stats["top"][u]
            row["class_means"] = self._class_means_row(d, root, meta, u)
            row["class_index"] = meta.get("class_index")
            row["sprites"] = _sprites(meta, d)
            history.append(row)
        return {
            "run": run,
            "layer": layer,
            "unit": u,
            "units": meta.get("units"),
            "kind": meta.get("kind"),
            "classes": meta.get("classes"),
            "input_shape": meta.get("input_shape"),
            "fixed_set": meta.get("fixed_set"),
            "history": history,
            "life": life_line(history),
        }

    def sprite_path(self, run, layer, epoch, kind, chunk) -> str:
        layer_dir, root = self._layer_dir(run, layer)
        if kind not in KINDS:
            raise DataError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}", 400)
        e, c = _int(epoch, "epoch"), _int(chunk, "chunk")
        path = os.path.join(layer_dir, f"epoch_{e:04d}", f"{kind}_{c:03d}.png")
        if not _inside(path, root):
            raise DataError("sprite points outside the logdir", 403)
        if not os.path.isfile(path):
            raise DataError(f"no {kind} sprite chunk {c} for layer {layer!r} at epoch {e} (not drawn then)", 404)
        return path

    @wrappers.Request.application
    def _serve_runs(self, request):
        return self._respond(self.runs)

    @wrappers.Request.application
    def _serve_grid(self, request):
        a = request.args
        return self._respond(lambda: self.grid(a.get("run"), a.get("layer"), a.get("epoch")))

    @wrappers.Request.application
    def _serve_unit(self, request):
        a = request.args
        return self._respond(lambda: self.unit(a.get("run"), a.get("layer"), a.get("unit")))

    @wrappers.Request.application
    def _serve_sprite(self, request):
        a = request.args
        try:
            path = self.sprite_path(a.get("run"), a.get("layer"), a.get("epoch"), a.get("kind"), a.get("chunk"))
            with open(path, "rb") as f:
                data = f.read()
            if not data.startswith(_PNG_SIGNATURE) or not data.rstrip(b"\0").endswith(_PNG_END):
                raise DataError(f"truncated or not a PNG: {os.path.basename(path)} (still being written?)", 500)
        except DataError as e:
            return _json_response({"error": str(e)}, e.code)
        except OSError as e:
            return _json_response({"error": f"cannot read the sprite: {e.strerror}"}, 500)
        return wrappers.Response(data, content_type="image/png", headers=_HEADERS)

    @wrappers.Request.application
    def _serve_static(self, request):
        name = request.path.rsplit("/", 1)[-1]
        if name not in _listdir(_STATIC) or name.startswith("."):
            return _json_response({"error": f"no static file {name!r}"}, 404)
        with open(os.path.join(_STATIC, name), "rb") as f:
            data = f.read()
        mime = _MIME.get(os.path.splitext(name)[1], "application/octet-stream")
        return wrappers.Response(data, content_type=mime, headers=_HEADERS)

    @staticmethod
    def _respond(compute):
        try:
            return _json_response(compute(), 200)
        except DataError as e:
            return _json_response({"error": str(e)}, e.code)
        except OSError as e:
            return _json_response({"error": f"cannot read convscope data: {e.strerror or e}"}, 500)


def _sprites(meta: dict, epoch_dir: str) -> dict:
    """Sprite layout per kind present at this epoch: cell px, cells per row, chunk count, how many units (the
    first ones) it holds, and the writer's notes on its scale (None when not drawn)."""
    out = {}
    for kind in KINDS:
        info = meta.get(kind)
        if not info or not os.path.isfile(os.path.join(epoch_dir, f"{kind}_000.png")):
            out[kind] = None
            continue
        cells = int(info.get("k", 1)) if kind == "top" else 1
        chunks = int(info.get("chunks", (meta["units"] + CHUNK - 1) // CHUNK))
        units = min(int(info.get("units", meta["units"])), meta["units"])  # actmax may cover the first units only
        out[kind] = {"cell": int(info["cell"]), "cells": cells, "chunks": chunks, "units": units}
        out[kind].update({k: info[k] for k in ("scale", "patch", "objective") if k in info})
    return out


def _int(value, name: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise DataError(f"parameter {name!r} must be a whole number; got {value!r}", 400) from None
    if out < 0:
        raise DataError(f"parameter {name!r} must be >= 0; got {out}", 400)
    return out


def _finite(obj):
    """NaN and infinities (which JSON has not) as null, so the browser's JSON.parse accepts every answer."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _short(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _json_response(obj, code: int):
    body = json.dumps(_finite(obj), allow_nan=False)
    return wrappers.Response(body, status=code, content_type="application/json", headers=_HEADERS)
