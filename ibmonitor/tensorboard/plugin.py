"""The "Information Plane" tab: a dynamic TensorBoard plugin named ``ibmonitor``.

TensorBoard finds the plugin through the ``tensorboard_plugins`` entry point
(``ibmonitor = ibmonitor.tensorboard.plugin:InformationPlanePlugin``) and shows it
in an iframe whose ES module is ``static/index.js``. The plugin reads only
through TensorBoard's data provider, so it works on any log directory
TensorBoard can read (local, remote, the fast Rust loader or the Python one).

Routes (under ``/data/plugin/ibmonitor``)
-----------------------------------------
``/runs``
    ``[{"run", "estimators", "probes", "layers", "max_step", "max_wall_time"}]``
    for every run with information-plane data, sorted by run name. A run
    whose plugin data this plugin cannot read (a ``layer_index`` that is not
    an int, ...) is left out with a logged warning, and the other runs are
    still served; ``/skipped`` says which and why.
``/skipped``
    ``[{"run", "reason"}]``: the runs left out of ``/runs``.
``/information?run=R[&estimator=E][&probe=P]``
    ``{"run": R, "series": [{"probe", "estimator", "layer", "layer_index",
    "epochs", "i_xt", "i_ty", "pinned", "resolution"}], "log_epochs": bool,
    "x_title": ..., "y_title": ..., "min_span": [x, y]}``, one series per
    layer in model order; values in bits, non-finite values as ``null``.
    ``pinned`` marks each point the estimator flagged as pinned by the sample
    size (false where the run did not record the flag), ``resolution`` the
    estimator's resolution in bits (``null`` where not recorded), and
    ``min_span`` the smallest axis spans to draw (:data:`MIN_PLANE_SPAN`
    widened to the largest resolution), as the plotly figures use.
    ``log_epochs`` says whether to colour the epochs on a log scale
    (:func:`ibmonitor.schema.epochs_look_log` on the recorded epochs, as the
    plotly figures and the TensorBoard images decide without a schedule);
    the titles are :data:`ibmonitor.schema.X_TITLE` and
    :data:`~ibmonitor.schema.Y_TITLE`.
``/scalars?run=R``
    ``{"run": R, "panels": {"Loss": {tag: {"epochs", "values"}}, "Accuracy":
    ..., "Sharpness": ..., "Norms": ..., "Saturation": ..., "Other": ...}}``:
    every scalar of the run except the information scalars
    (``information/*``), in the panels of :func:`ibmonitor.schema.scalar_panel`
    (keys: :data:`ibmonitor.schema.PANELS`, in order; a panel without data is
    ``{}``), the same panels as the plotly dashboard and the custom-scalars
    layout. The gap measure's copies (``gap/train_loss``, ...) are left out
    where the plain ``train_loss``... exist.
``/explanations?run=RUN``
    ``{"run", "tags": {tag: [epoch, ...]}}``: the explanation image grids of
    :class:`ibmonitor.explain.ExplainSet` (``explain/...``) and their epochs.
``/explanation_image?run=RUN&tag=TAG&step=EPOCH``
    One of those images (PNG), for the tab's epoch slider.
``/static/index.js``, ``/static/plotly.min.js``
    The front end, and plotly.js from the installed plotly package (nothing is
    loaded from a CDN).

Every route is read-only: it answers GET (and HEAD); any other method gets
``405 Method Not Allowed`` with ``Allow: GET, HEAD``. A series of
``/information`` whose tensors are not numbers (a string tensor) is left out,
and named in the body's ``"skipped": [{"run", "tag", "reason"}]`` (``[]``
when none).

The data are the tensor summaries written by
:class:`ibmonitor.tensorboard.writer.TensorBoardWriter`: tag
``ibmonitor/<probe>/<estimator>/<layer>``, a float64 tensor ``[i_xt, i_ty]``
per epoch (followed by ``pinned`` and ``resolution`` where the rows had
them), plugin name ``ibmonitor``, ``DATA_CLASS_TENSOR``, and the JSON
``{"version", "probe", "estimator", "layer", "layer_index"}`` as plugin content.
"""

from __future__ import annotations

import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from ..schema import (
    DEFAULT_PROBE,
    MIN_PLANE_SPAN,
    PANELS,
    UNCERTAINTY_COLUMNS,
    X_TITLE,
    Y_TITLE,
    epochs_look_log,
    probe_prefix,
    scalar_panel,
)

__all__ = ["MIN_PLANE_SPAN", "PLUGIN_NAME", "InformationPlanePlugin"]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "ibmonitor"
TAB_NAME = "Information Plane"
_STATIC = Path(__file__).resolve().parent / "static"
# Without a --samples_per_plugin hint, keep this many points per time series.
_DEFAULT_DOWNSAMPLING = 100_000
#: Scalars of the information plane itself (written by the writer as
#: ``information/[<probe>/]<estimator>/<layer>/I_XT``): not a panel's.
_INFORMATION_PREFIX = probe_prefix("information", DEFAULT_PROBE)
#: Tags of the explanation image grids (:class:`ibmonitor.explain.ExplainSet`).
EXPLAIN_PREFIX = "explain/"
_PANEL_ORDER = ("train", "test", "gap/train", "gap/test", "gap/")


class InformationPlanePlugin(base_plugin.TBPlugin):
    """Information-plane trajectories, gap and sharpness in one TensorBoard tab.

    Parameters
    ----------
    context : tensorboard.plugins.base_plugin.TBContext
        Given by TensorBoard; only ``data_provider`` and ``sampling_hints`` are
        used.
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._data_provider = context.data_provider
        hints = context.sampling_hints or {}
        self._downsample = _downsample_hint(hints.get(PLUGIN_NAME))
        self._scalar_downsample = _downsample_hint(hints.get("scalars"))

    # ------------------------------------------------------------ TBPlugin API
    def get_plugin_apps(self) -> dict:
        """Return the plugin's routes (see the module docstring), GET only."""
        apps = {
            "/runs": self._serve_runs,
            "/skipped": self._serve_skipped,
            "/information": self._serve_information,
            "/scalars": self._serve_scalars,
            "/explanations": self._serve_explanations,
            "/explanation_image": self._serve_explanation_image,
            "/static/index.js": self._serve_index_js,
            "/static/plotly.min.js": self._serve_plotly,
        }
        return {route: _read_only(app) for route, app in apps.items()}

    def is_active(self) -> bool:
        """Return True if any run has information-plane tensors.

        TensorBoard first asks its data provider which plugins have data, which
        already covers this plugin; this answers the same question directly.
        """
        if self._data_provider is None:
            return False
        try:
            listing = self._data_provider.list_tensors(
                _request_context(), experiment_id="", plugin_name=PLUGIN_NAME
            )
        except Exception:  # a provider that cannot answer without a request
            logger.debug("is_active: the data provider could not list tensors")
            return False
        return any(listing.values()) if listing else False

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        """Load ``static/index.js`` as an ES module, under the tab's name."""
        return base_plugin.FrontendMetadata(
            es_module_path="/static/index.js", tab_name=TAB_NAME
        )

    # ----------------------------------------------------------------- routes
    @wrappers.Request.application
    def _serve_index_js(self, request: wrappers.Request) -> wrappers.Response:
        body = (_STATIC / "index.js").read_bytes()
        return http_util.Respond(request, body, "application/javascript")

    @wrappers.Request.application
    def _serve_plotly(self, request: wrappers.Request) -> wrappers.Response:
        try:
            body = plotly_js_path().read_bytes()
        except (FileNotFoundError, ModuleNotFoundError) as error:
            raise errors.NotFoundError(
                "plotly.min.js is not available: install the 'plotly' package"
            ) from error
        return http_util.Respond(request, body, "application/javascript", expires=3600)

    @wrappers.Request.application
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        return http_util.Respond(
            request, self.runs_impl(ctx, experiment=experiment), "application/json"
        )

    @wrappers.Request.application
    def _serve_skipped(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        body = self.skipped_impl(ctx, experiment=experiment)
        return http_util.Respond(request, _dumps(body), "application/json")

    @wrappers.Request.application
    def _serve_information(self, request: wrappers.Request) -> wrappers.Response:
        run = _required_run(request)
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        body = self.information_impl(
            ctx,
            experiment=experiment,
            run=run,
            estimator=request.args.get("estimator") or None,
            probe=request.args.get("probe") or None,
        )
        return http_util.Respond(request, _dumps(body), "application/json")

    @wrappers.Request.application
    def _serve_scalars(self, request: wrappers.Request) -> wrappers.Response:
        run = _required_run(request)
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        body = self.scalars_impl(ctx, experiment=experiment, run=run)
        return http_util.Respond(request, _dumps(body), "application/json")

    @wrappers.Request.application
    def _serve_explanations(self, request: wrappers.Request) -> wrappers.Response:
        run = _required_run(request)
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        body = self.explanations_impl(ctx, experiment=experiment, run=run)
        return http_util.Respond(request, _dumps(body), "application/json")

    @wrappers.Request.application
    def _serve_explanation_image(self, request: wrappers.Request) -> wrappers.Response:
        run, tag = request.args.get("run"), request.args.get("tag")
        if run is None or tag is None or not tag.startswith(EXPLAIN_PREFIX):
            raise errors.InvalidArgumentError(
                f"'run' and 'tag' (starting with {EXPLAIN_PREFIX!r}) are required."
            )
        try:
            step = int(request.args.get("step", ""))
        except ValueError:
            raise errors.InvalidArgumentError("'step' must be an int.") from None
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        body = self.explanation_image_impl(
            ctx, experiment=experiment, run=run, tag=tag, step=step
        )
        return http_util.Respond(request, body, "image/png")

    # ---------------------------------------------------------- implementations
    def _explanation_data(self, ctx: Any, experiment: str, run: str, tags=None):
        """Read the run's explanation images: ``{tag: [BlobSequenceDatum]}``."""
        listing = self._data_provider.list_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name="images",
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        ).get(run, {})
        wanted = [t for t in listing if t.startswith(EXPLAIN_PREFIX)]
        if tags is not None:
            wanted = [t for t in wanted if t in tags]
        if not wanted:
            return {}
        return self._data_provider.read_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name="images",
            downsample=self._downsample,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=wanted),
        ).get(run, {})

    def explanations_impl(self, ctx: Any, *, experiment: str, run: str) -> dict:
        """Return the run's explanation images by tag, with their epochs.

        Tags are the image grids of :class:`ibmonitor.explain.ExplainSet`
        (``explain/saliency``, ``explain/top/<layer>``,
        ``explain/features/<layer>``); each image is served by
        ``/explanation_image?run=&tag=&step=``.
        """
        data = self._explanation_data(ctx, experiment, run)
        return {
            "run": run,
            "tags": {
                tag: [int(d.step) for d in data[tag] if len(d.values) > 2]
                for tag in sorted(data)
            },
        }

    def explanation_image_impl(
        self, ctx: Any, *, experiment: str, run: str, tag: str, step: int
    ) -> bytes:
        """Return the PNG of one explanation image (``/explanation_image``)."""
        data = self._explanation_data(ctx, experiment, run, tags=[tag])
        for datum in data.get(tag, []):
            if int(datum.step) == step and len(datum.values) > 2:
                return self._data_provider.read_blob(
                    ctx, blob_key=datum.values[2].blob_key
                )
        raise errors.NotFoundError(
            f"No explanation image {tag!r} at epoch {step} in run {run!r}."
        )

    def runs_impl(self, ctx: Any, *, experiment: str) -> list:
        """List the runs with information-plane data (body of ``/runs``).

        Runs whose data cannot be read are left out (see :meth:`skipped_impl`).
        """
        return self._runs(ctx, experiment=experiment)[0]

    def skipped_impl(self, ctx: Any, *, experiment: str) -> list:
        """List the runs left out of ``/runs``: ``[{"run", "reason"}]``."""
        return self._runs(ctx, experiment=experiment)[1]

    def _runs(self, ctx: Any, *, experiment: str) -> tuple:
        listing, skipped = self._list_checked(ctx, experiment=experiment)
        result = []
        for run in sorted(listing):
            series = listing[run]
            if not series:
                continue
            try:
                result.append(_run_entry(run, series))
            except Exception as error:  # one bad run must not hide the others
                skipped[run] = _skip(run, f"its series cannot be summarised: {error}")
        return result, [skipped[run] for run in sorted(skipped)]

    def information_impl(
        self,
        ctx: Any,
        *,
        experiment: str,
        run: str,
        estimator: Optional[str] = None,
        probe: Optional[str] = None,
    ) -> dict:
        """Trajectories of every layer of one run (body of ``/information``)."""
        listings, skipped_runs = self._list_checked(
            ctx, experiment=experiment, runs=[run]
        )
        listing = listings.get(run, {})
        skipped = [
            {"run": run, "tag": None, "reason": entry["reason"]}
            for entry in skipped_runs.values()
        ]
        wanted = {
            tag: info
            for tag, (info, _) in listing.items()
            if (estimator is None or info["estimator"] == estimator)
            and (probe is None or info["probe"] == probe)
        }
        series = []
        if wanted:
            data = self._data_provider.read_tensors(
                ctx,
                experiment_id=experiment,
                plugin_name=PLUGIN_NAME,
                downsample=self._downsample,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=list(wanted)),
            ).get(run, {})
            for tag, info in wanted.items():
                points = data.get(tag, [])
                try:
                    values = [_numbers(point.numpy) for point in points]
                except (TypeError, ValueError) as error:
                    reason = f"its values are not numbers ({error})"
                    logger.warning("Skipping tag %r of run %r: %s.", tag, run, reason)
                    skipped.append({"run": run, "tag": tag, "reason": reason})
                    continue
                where = {q: k for k, q in enumerate(info["quantities"])}

                def column(name: str, values: list = values, where=where) -> list:
                    k = where.get(name)
                    return [
                        _finite(v[k]) if k is not None and v.size > k else None
                        for v in values
                    ]

                entry = {
                    "probe": info["probe"],
                    "estimator": info["estimator"],
                    "layer": info["layer"],
                    "layer_index": info["layer_index"],
                    "epochs": [int(point.step) for point in points],
                    "i_xt": column("i_xt"),
                    "i_ty": column("i_ty"),
                    "pinned": [
                        bool(p is not None and p > 0.5) for p in column("pinned")
                    ],
                    "resolution": column("resolution"),
                }
                for name in UNCERTAINTY_COLUMNS:  # only where the run has them
                    if name in where:
                        entry[name] = column(name)
                series.append(entry)
        series.sort(
            key=lambda s: (s["probe"], s["estimator"], s["layer_index"], s["layer"])
        )
        epochs = [e for s in series for e in s["epochs"]]
        resolution = max(
            (r for s in series for r in s["resolution"] if r is not None),
            default=0.0,
        )
        return {
            "run": run,
            "series": series,
            "log_epochs": epochs_look_log(epochs),
            "x_title": X_TITLE,
            "y_title": Y_TITLE,
            "min_span": [
                max(MIN_PLANE_SPAN[0], resolution),
                max(MIN_PLANE_SPAN[1], resolution),
            ],
            "skipped": skipped,
        }

    def scalars_impl(self, ctx: Any, *, experiment: str, run: str) -> dict:
        """Sort the run's scalars into the schema's panels (body of ``/scalars``)."""
        listing = self._data_provider.list_scalars(
            ctx,
            experiment_id=experiment,
            plugin_name="scalars",
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        ).get(run, {})
        panel_of = {
            tag: scalar_panel(tag).panel
            for tag in listing
            if not tag.startswith(_INFORMATION_PREFIX)
            and scalar_panel(tag).panel in PANELS
        }
        # The gap measure repeats the train and test values; show its copies only
        # when the run has no plain train_loss / test_loss (... _acc) scalars.
        for tag in list(panel_of):
            if tag.startswith("gap/") and tag[len("gap/") :] in panel_of:
                del panel_of[tag]
        panels: dict = {name: {} for name in PANELS}
        if panel_of:
            data = self._data_provider.read_scalars(
                ctx,
                experiment_id=experiment,
                plugin_name="scalars",
                downsample=self._scalar_downsample,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=list(panel_of)),
            ).get(run, {})
            for tag in sorted(panel_of, key=_panel_sort_key):
                points = data.get(tag, [])
                panels[panel_of[tag]][tag] = {
                    "epochs": [int(p.step) for p in points],
                    "values": [_finite(p.value) for p in points],
                }
        return {"run": run, "panels": panels}

    # ---------------------------------------------------------------- helpers
    def _list_checked(
        self, ctx: Any, *, experiment: str, runs: Optional[list] = None
    ) -> tuple:
        """Return ``(listing, skipped)``: readable runs and ``{run: entry}``.

        A run with any malformed ibmonitor metadata is skipped whole (its
        data cannot be trusted), with a logged warning.
        """
        if self._data_provider is None:
            return {}, {}
        listing = self._data_provider.list_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=runs) if runs else None,
        )
        result: dict = {}
        skipped: dict = {}
        for run, tags in (listing or {}).items():
            try:
                for tag, series in tags.items():
                    try:
                        info = _parse_content(tag, series.plugin_content)
                    except (TypeError, ValueError, OverflowError) as error:
                        raise _BadRun(
                            f"tag {tag!r} has malformed metadata: {error}"
                        ) from error
                    if info is not None:
                        result.setdefault(run, {})[tag] = (info, series)
            except _BadRun as error:
                result.pop(run, None)
                skipped[run] = _skip(run, str(error))
        return result, skipped


class _BadRun(ValueError):
    """A run's ibmonitor data cannot be read."""


def _required_run(request: Any) -> str:
    """Return the request's ``run`` argument (400 when it is missing)."""
    run = request.args.get("run")
    if run is None:
        raise errors.InvalidArgumentError("The 'run' parameter is required.")
    return run


def _skip(run: str, reason: str) -> dict:
    logger.warning("Skipping run %r in the Information Plane tab: %s.", run, reason)
    return {"run": run, "reason": reason}


def _run_entry(run: str, series: dict) -> dict:
    """Return the ``/runs`` entry of a run (``series``: {tag: (info, series)})."""
    meta = [info for info, _ in series.values()]
    layers = sorted({(info["layer_index"], info["layer"]) for info in meta})
    return {
        "run": run,
        "estimators": sorted({info["estimator"] for info in meta}),
        "probes": sorted(
            {info["probe"] for info in meta},
            key=lambda probe: (probe != DEFAULT_PROBE, probe),
        ),
        "layers": list(dict.fromkeys(name for _, name in layers)),
        "max_step": int(max(ts.max_step for _, ts in series.values())),
        "max_wall_time": float(max(ts.max_wall_time for _, ts in series.values())),
    }


def _numbers(array: Any) -> Any:
    """Flatten a tensor value to float64; TypeError/ValueError if not numeric."""
    import numpy as np

    flat = np.asarray(array).reshape(-1)
    if flat.dtype.kind not in "biuf":
        raise TypeError(f"dtype {flat.dtype} is not numeric")
    return flat.astype(np.float64)


_ALLOWED = "GET, HEAD"


def _read_only(app: Any) -> Any:
    """Wrap a WSGI app so that it answers 405 to anything but GET and HEAD."""

    def read_only_app(environ: dict, start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method in ("GET", "HEAD"):
            return app(environ, start_response)
        body = f"Method {method} not allowed; this route is read-only.\n".encode()
        start_response(
            "405 METHOD NOT ALLOWED",
            [
                ("Allow", _ALLOWED),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body] if method != "HEAD" else []

    return read_only_app


def plotly_js_path() -> Path:
    """Return the path of ``plotly.min.js`` inside the installed plotly package."""
    files = resources.files("plotly") / "package_data" / "plotly.min.js"
    path = Path(str(files))
    if not path.is_file():
        raise FileNotFoundError(str(path))
    return path


def _parse_content(tag: str, content: bytes) -> Optional[dict]:
    """Read the plugin content of a tag; None for data this plugin cannot read."""
    try:
        info = json.loads(content.decode("utf-8")) if content else {}
    except (UnicodeDecodeError, ValueError):
        logger.warning("Ignoring tag %r: its ibmonitor metadata is not JSON.", tag)
        return None
    if not isinstance(info, dict):
        logger.warning("Ignoring tag %r: its ibmonitor metadata is not an object.", tag)
        return None
    if int(info.get("version", 0)) > 1:
        logger.warning("Ignoring tag %r: unknown ibmonitor data version.", tag)
        return None
    # Malformed values raise ValueError: the caller skips the run.
    try:
        layer_index = int(info.get("layer_index", 0))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"'layer_index' must be an int, got {info.get('layer_index')!r}"
        ) from None
    quantities = info.get("quantities") or ["i_xt", "i_ty", "pinned", "resolution"]
    if not isinstance(quantities, list) or not all(
        isinstance(q, str) for q in quantities
    ):
        raise ValueError(f"'quantities' must be a list of names, got {quantities!r}")
    parts = tag.split("/")
    layer = info.get("layer") or (parts[-1] if parts else tag)
    return {
        "quantities": quantities,
        "probe": str(
            info.get("probe") or (parts[1] if len(parts) > 3 else DEFAULT_PROBE)
        ),
        "estimator": str(
            info.get("estimator") or (parts[-2] if len(parts) > 2 else "")
        ),
        "layer": str(layer),
        "layer_index": layer_index,
    }


def _panel_sort_key(tag: str) -> tuple:
    """Train before test before the gap; otherwise alphabetical."""
    rank = next(
        (i for i, prefix in enumerate(_PANEL_ORDER) if tag.startswith(prefix)),
        len(_PANEL_ORDER),
    )
    return (rank, tag)


def _downsample_hint(hint: Optional[int]) -> int:
    # --samples_per_plugin NAME=0 means "keep every sample".
    return _DEFAULT_DOWNSAMPLING if not hint else int(hint)


def _finite(value: Any) -> Optional[float]:
    number = float(value)
    return number if math.isfinite(number) else None


def _dumps(body: Any) -> str:
    return json.dumps(body, allow_nan=False)


def _request_context() -> Any:
    from tensorboard import context

    return context.RequestContext()
