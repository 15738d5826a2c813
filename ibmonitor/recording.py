"""Record the activations of chosen layers in one no-grad pass over a probe set.

:func:`record_activations` registers forward hooks for the pass only and
removes them in ``finally`` (also when the model raises), runs the model in
evaluation mode under ``torch.no_grad()`` with autocast disabled (so the
recording equals a float32 eager pass even inside ``torch.autocast``), then
puts back the training flag of every submodule and every random-number
generator state (torch CPU and CUDA, numpy, python) exactly as it found them,
so that monitoring never changes training.

:func:`select_layers` chooses what to record and says why: by default it runs
one short forward pass and keeps the outputs of blocks (residual, transformer
and recurrent blocks) and of activation modules outside blocks, skipping (with
a reason) modules called more or less than once and outputs that are the same
tensor as an earlier one. :func:`resolve_layers` is the same choice made from
the module tree alone, without a pass. The model's own output is available
under the name ``"output"`` (or ``"model_output"`` if the model has a
submodule called ``output``).

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
>>> select_layers(model, None, torch.randn(2, 4)).summary()
'recording 2 layers: 1, output'
>>> acts = record_activations(model, None, torch.randn(10, 4))
>>> {name: tuple(t.shape) for name, t in acts.items()}
{'1': (10, 3), 'output': (10, 2)}
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ._device import autocast_disabled, model_device, model_float_dtype
from ._state import preserve_state
from .exceptions import InvalidParameterError
from .structures import (
    OutputKey,
    call_model,
    move,
    n_rows,
    select_output,
    slice_rows,
)

__all__ = [
    "ACTIVATION_CLASS_NAMES",
    "ACTIVATION_TYPES",
    "BLOCK_CLASS_NAMES",
    "BLOCK_TYPES",
    "CHANNELS_FIRST_TYPES",
    "LINEAR_TYPES",
    "REDUCE_OPTIONS",
    "LayerSelection",
    "is_activation",
    "is_block",
    "layer_output_name",
    "record_activations",
    "resolve_layers",
    "select_layers",
    "unwrap_model",
]

logger = logging.getLogger(__name__)

#: Module types whose outputs the default selection records (outside blocks).
ACTIVATION_TYPES: Tuple[type, ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.LogSigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    nn.Threshold,
    nn.GLU,
)
#: Activation classes of other libraries, matched by class name (the library
#: is never imported): Hugging Face ``transformers.activations`` (the classes
#: of ``ACT2FN``) and timm's ``layers.activations`` / ``activations_me``.
#: Generic names (``GELU``, ``Tanh``, ...) of those libraries are matched by
#: their module: any class defined in ``transformers.activations`` or a timm
#: ``activations`` module counts.
ACTIVATION_CLASS_NAMES: frozenset = frozenset(
    {
        # transformers.activations
        "GELUActivation",
        "NewGELUActivation",
        "QuickGELUActivation",
        "FastGELUActivation",
        "ClippedGELUActivation",
        "AccurateGELUActivation",
        "PytorchGELUTanh",
        "GELUTanh",
        "MishActivation",
        "SiLUActivation",
        "LaplaceActivation",
        "ReLUSquaredActivation",
        "SqrtSoftplusActivation",
        "XIELUActivation",
        # timm.layers.activations, activations_me
        "Swish",
        "SwishMe",
        "MishMe",
        "HardSwishMe",
        "HardSigmoidMe",
        "HardMish",
        "HardMishMe",
        "QuickGELU",
        "StarReLU",
        "SquaredReLU",
    }
)
_ACTIVATION_MODULE_PREFIXES = (
    "transformers.activations",
    "timm.layers.activations",
    "timm.models.layers.activations",
)
#: Module types recorded as one unit (their insides are not recorded).
BLOCK_TYPES: Tuple[type, ...] = (
    nn.RNNBase,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)
#: Block classes whose names do not end in Block, Layer or Bottleneck.
BLOCK_CLASS_NAMES: frozenset = frozenset(
    {
        "InvertedResidual",  # torchvision MobileNet/ShuffleNet, timm EfficientNet
        "DepthwiseSeparableConv",  # timm EfficientNet/MobileNet
        "EdgeResidual",
        "CondConvResidual",
        "UniversalInvertedResidual",
        "MBConv",  # torchvision EfficientNet
        "FusedMBConv",
    }
)
_BLOCK_SUFFIXES = ("Block", "Layer", "Bottleneck")
#: Module types recorded by default when the model has neither blocks nor
#: activation modules (attention projections excepted).
LINEAR_TYPES: Tuple[type, ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,
)
#: Names of the query/key/value projections of attention (never a default).
_PROJECTION_NAMES = frozenset(
    {
        "q",
        "k",
        "v",
        "qkv",
        "query",
        "key",
        "value",
        "q_proj",
        "k_proj",
        "v_proj",
        "qkv_proj",
        "o_proj",
        "in_proj",
        "out_proj",
        "to_q",
        "to_k",
        "to_v",
        "to_qkv",
        "c_attn",
    }
)
#: Module types whose rank-3 output is (batch, channels, length).
CHANNELS_FIRST_TYPES: Tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)
#: Options of ``reduce``.
REDUCE_OPTIONS: Tuple[str, ...] = ("auto", "flatten", "mean", "max", "first")

_MAX_LISTED = 20
_MAX_SUMMARY = 8

LayerSpec = Union[
    None, str, type, Sequence[Union[str, type]], Callable[[str, nn.Module], bool]
]


# --------------------------------------------------------------------- models
def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside DDP, ``DataParallel`` or ``torch.compile``.

    Recording goes through the wrapped module, so that a pass on one rank's
    shard runs no collective operation, the compiled graph is not traced
    again for the hooks, and layer names carry no ``module.`` or
    ``_orig_mod.`` prefix (they equal the names of the eager model).
    """
    wrappers: Tuple[type, ...] = (nn.DataParallel,)
    with contextlib.suppress(Exception):  # pragma: no cover - distributed builds
        from torch.nn.parallel import DistributedDataParallel

        wrappers = (*wrappers, DistributedDataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
            continue
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module) and inner is not model:
            model = inner
            continue
        return model


def layer_output_name(model: nn.Module) -> str:
    """Name under which the model's own output is recorded (``"output"``)."""
    names = {name for name, _ in model.named_modules()}
    return "model_output" if "output" in names else "output"


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an activation (torch, Hugging Face or timm class)."""
    if isinstance(module, ACTIVATION_TYPES):
        return True
    cls = type(module)
    if cls.__name__ in ACTIVATION_CLASS_NAMES:
        return True
    return cls.__module__.startswith(_ACTIVATION_MODULE_PREFIXES)


def is_block(module: nn.Module) -> bool:
    """Whether ``module`` is recorded as one unit by the default selection.

    A block is a recurrent module (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``), a
    ``nn.TransformerEncoderLayer``/``DecoderLayer``, or a module with
    submodules whose class (or a base class) is named ``*Block``, ``*Layer``
    or ``*Bottleneck`` (torchvision ``BasicBlock``/``Bottleneck``, timm
    ``Block``, Hugging Face ``BertLayer``/``ViTLayer``/``GPT2Block``), or one
    of :data:`BLOCK_CLASS_NAMES`.
    """
    if isinstance(module, BLOCK_TYPES):
        return True
    if is_activation(module) or next(module.children(), None) is None:
        return False
    for cls in type(module).__mro__:
        name = cls.__name__
        if name in BLOCK_CLASS_NAMES or name.endswith(_BLOCK_SUFFIXES):
            return True
    return False


def _has_lazy_parameters(model: nn.Module) -> bool:
    return any(
        getattr(m, "has_uninitialized_params", lambda: False)() for m in model.modules()
    )


def _is_projection(name: str, parent: Optional[nn.Module]) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    if leaf.lower() in _PROJECTION_NAMES:
        return True
    if parent is None:
        return False
    parent_name = type(parent).__name__.lower()
    return "attention" in parent_name or "attn" in parent_name


@dataclass
class _Candidates:
    """The default candidates found in the module tree (no pass)."""

    primary: List[Tuple[str, nn.Module]]  # blocks and activations, model order
    fallback: List[Tuple[str, nn.Module]]  # Linear/Conv outside blocks
    inside: Dict[str, str]  # activation inside a block -> the block


def _default_candidates(model: nn.Module) -> _Candidates:
    named = list(model.named_modules())
    parents: Dict[str, nn.Module] = {}
    for name, module in named:
        for child, _ in module.named_children():
            parents[f"{name}.{child}" if name else child] = module
    primary: List[Tuple[str, nn.Module]] = []
    fallback: List[Tuple[str, nn.Module]] = []
    inside: Dict[str, str] = {}
    block_of: Optional[str] = None  # the outermost block we are inside
    for name, module in named:
        if not name:
            continue
        if block_of is not None and name.startswith(block_of + "."):
            if is_activation(module):
                inside[name] = block_of
            continue
        block_of = None
        if is_block(module):
            primary.append((name, module))
            block_of = name
        elif is_activation(module):
            primary.append((name, module))
        elif isinstance(module, LINEAR_TYPES) and not _is_projection(
            name, parents.get(name)
        ):
            fallback.append((name, module))
    return _Candidates(primary, fallback, inside)


def resolve_layers(model: nn.Module, layers: LayerSpec = None) -> Dict[str, nn.Module]:
    """Choose the layers to record from the module tree alone (no forward pass).

    Parameters
    ----------
    model : nn.Module
        The model (DDP, ``DataParallel`` and ``torch.compile`` are unwrapped).
    layers : None, str, type, sequence of str or type, or callable, default=None
        ``None``: the structural part of the default selection of
        :func:`select_layers` (blocks, and activation modules outside blocks;
        Linear and Conv modules when there are neither), plus the model's
        output (``"output"``), except for a ``nn.Sequential`` whose last
        module is already chosen. A name or a list of names from
        ``model.named_modules()`` (``"output"`` or ``""`` is the model's own
        output; a ``module.`` or ``_orig_mod.`` prefix is ignored). A module
        type or a list of types (every module of those types). A callable
        ``f(name, module) -> bool``.

    Returns
    -------
    layers : dict of str to nn.Module
        Ordered as in ``model.named_modules()``, the model output last.

    Raises
    ------
    InvalidParameterError
        An unknown name (the message lists the available names), a type that
        matches no module, an empty selection.
    """
    model = unwrap_model(model)
    out_name = layer_output_name(model)
    named = [(name, module) for name, module in model.named_modules() if name]
    available = [name for name, _ in named]

    if layers is None:
        found = _default_candidates(model)
        chosen = found.primary or found.fallback
        # A Sequential whose last leaf is chosen already records its output.
        leaves = [n for n, m in named if not list(m.children())]
        last_is_output = (
            isinstance(model, nn.Sequential)
            and bool(leaves)
            and bool(chosen)
            and chosen[-1][0] == leaves[-1]
        )
        result = OrderedDict(chosen)
        if not last_is_output:
            result[out_name] = model
        return result

    if callable(layers) and not isinstance(layers, type):
        result = OrderedDict((n, m) for n, m in named if layers(n, m))
        if bool(layers("", model)):
            result[out_name] = model
        if not result:
            raise InvalidParameterError(
                "No layers to monitor: the 'layers' callable selected no module. "
                "It is called as f(name, module) for every entry of "
                "model.named_modules()."
            )
        return result

    if isinstance(layers, (str, type)):
        layers = [layers]
    items = list(layers)
    if not items:
        raise InvalidParameterError(
            "No layers to monitor: 'layers' is empty. Pass module names from "
            f"model.named_modules(), e.g. {_listing(available[:2])}."
        )
    wanted: Set[str] = set()
    want_output = False
    by_name = dict(named)
    for item in items:
        if isinstance(item, type):
            if issubclass(item, nn.Module):
                hits = [n for n, m in named if isinstance(m, item)]
                if isinstance(model, item):
                    want_output = True
                if not hits and not isinstance(model, item):
                    raise InvalidParameterError(
                        f"No module of type {item.__name__} in the model. Module "
                        f"types present: {_listing(_types(named))}."
                    )
                wanted.update(hits)
                continue
        elif isinstance(item, str):
            name = _strip_wrapper_prefix(item, by_name)
            if name in by_name:
                wanted.add(name)
                continue
            if name in ("", out_name):
                want_output = True
                continue
            raise InvalidParameterError(
                f"Unknown layer {item!r}. Available layers: "
                f"{_listing([*available, out_name])}."
            )
        raise InvalidParameterError(
            "The 'layers' parameter must be None, a module name, a module type, a "
            f"list of those, or a callable. Got {item!r} instead."
        )
    result = OrderedDict((n, m) for n, m in named if n in wanted)
    if want_output:
        result[out_name] = model
    return result


def _strip_wrapper_prefix(name: str, known: Mapping[str, Any]) -> str:
    """Drop ``module.``/``_orig_mod.`` prefixes of a wrapped model's names."""
    while name not in known:
        for prefix in ("_orig_mod.", "module."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        else:
            return name
    return name


def _types(named: List[Tuple[str, nn.Module]]) -> List[str]:
    seen: Dict[str, None] = {}
    for _, module in named:
        seen.setdefault(type(module).__name__, None)
    return list(seen)


def _listing(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= _MAX_LISTED:
        return repr(names)
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return f"[{shown}, ... ({len(names) - _MAX_LISTED} more)]"


# ---------------------------------------------------------------- selection
@dataclass
class LayerSelection:
    """What :func:`select_layers` chose to record, and why.

    Attributes
    ----------
    layers : dict of str to nn.Module
        The layers to record, in model order, the model's output last.
    skipped : dict of str to str
        Candidates left out, with the reason (``"called 2 times per pass"``,
        ``"same tensor as 'fc'"``, ``"inside block 'layer1.0'"``, ...).
    shapes : dict of str to dict
        ``{"shape": [...], "n_units": int}`` of each recorded layer: its
        output shape without the batch axis and its width after ``reduce``
        (empty when no pass was run).
    """

    layers: Dict[str, nn.Module]
    skipped: Dict[str, str] = field(default_factory=dict)
    shapes: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> List[str]:
        """Names of the recorded layers."""
        return list(self.layers)

    def summary(self) -> str:
        """One line: what is recorded and what was skipped (long lists cut)."""
        names = list(self.layers)
        noun = "layer" if len(names) == 1 else "layers"
        line = f"recording {len(names)} {noun}: {_cut(names)}"
        if self.skipped:
            items = [f"{n} ({why})" for n, why in self.skipped.items()]
            line += f"; skipped {len(items)}: {_cut(items)}"
        return line


def _cut(items: List[str]) -> str:
    if len(items) <= _MAX_SUMMARY:
        return ", ".join(items)
    head = items[: _MAX_SUMMARY - 2]
    return ", ".join([*head, f"... ({len(items) - len(head) - 1} more)", items[-1]])


def select_layers(
    model: nn.Module,
    layers: Union[LayerSpec, Dict[str, nn.Module]] = None,
    example_inputs: Any = None,
    *,
    reduce: str = "auto",
    output_key: OutputKey = None,
) -> LayerSelection:
    """Choose the layers to record, learning from one short forward pass.

    Parameters
    ----------
    model : nn.Module
        The model (DDP, ``DataParallel`` and ``torch.compile`` are unwrapped,
        so names are those of the eager model).
    layers : None, or anything :func:`resolve_layers` takes, default=None
        ``None`` is the default selection (see Notes); anything else is an
        explicit choice, checked strictly.
    example_inputs : Tensor, ndarray, tuple/list or mapping of tensors, optional
        A few rows (two are enough) fed to the model as
        :func:`record_activations` feeds it. Without them (or when the model
        has lazy parameters, which a pass would initialise) the choice is
        made from the module tree alone and ``shapes`` is empty.
    reduce : {"auto", "flatten", "mean", "max", "first"}, default="auto"
        As in :func:`record_activations`; decides ``n_units``.
    output_key : None, int or str, default=None
        Which element of what ``forward`` returns is the model's output (see
        :func:`ibmonitor.structures.select_output`).

    Returns
    -------
    selection : LayerSelection
        The layers, the skipped candidates with reasons, and the shapes.

    Raises
    ------
    InvalidParameterError
        Bad ``reduce``; for an explicit choice, a layer called more than
        once or never in the pass, one that returns no tensor or not the
        batch first; a model output that ``output_key`` does not find.

    Notes
    -----
    The default selection (``layers=None``):

    1. Candidates are blocks (:func:`is_block`: recurrent modules,
       transformer layers, residual blocks, Hugging Face ``*Layer``
       modules), recorded as one unit, the outermost block only; and
       activation modules (:func:`is_activation`) outside blocks. Activations
       inside a block are skipped with the reason ``inside block '...'``.
    2. A candidate called more than once or never in the pass is skipped
       with the reason, never an error; so is one that returns no tensor or
       whose first axis is not the batch. (``reduce="first"`` on a
       convolutional map is an error naming the layer, as it is for an
       explicit choice.)
    3. An output that is the same tensor (same storage, same values) as an
       earlier recorded one is skipped (``output`` equal to ``fc``: "same
       tensor as 'fc'").
    4. When no candidate survives, Linear and Conv modules outside blocks
       are the candidates instead, except the query/key/value/output
       projections of attention.
    5. The model's output (``"output"``) comes last.
    """
    _check_reduce(reduce, "select_layers")
    model = unwrap_model(model)
    out_name = layer_output_name(model)
    default = layers is None
    if isinstance(layers, LayerSelection):
        layers = layers.layers
    explicit: Optional[Dict[str, nn.Module]] = None
    if isinstance(layers, dict) and all(
        isinstance(m, nn.Module) for m in layers.values()
    ):
        explicit = OrderedDict(layers)
    elif not default:
        explicit = resolve_layers(model, layers)
    if explicit is not None and not explicit:
        raise InvalidParameterError("No layers to monitor: the selection is empty.")

    no_pass = example_inputs is None or _has_lazy_parameters(model)
    found = _default_candidates(model) if default else None
    if no_pass:
        if explicit is not None:
            return LayerSelection(explicit)
        assert found is not None
        skipped = {n: f"inside block {b!r}" for n, b in found.inside.items()}
        return LayerSelection(resolve_layers(model, None), skipped)

    if explicit is not None:
        hooked = explicit
    else:
        assert found is not None
        hooked = OrderedDict([*found.primary, *found.fallback])
        hooked[out_name] = model
    x = _as_structure(example_inputs, "example_inputs")
    if x is None:
        raise InvalidParameterError(
            "The 'example_inputs' parameter of select_layers must be a tensor, an "
            "array, or a tuple, list or mapping of tensors. Got "
            f"{type(example_inputs).__name__} instead."
        )
    rows = n_rows(x)
    if rows == 0:
        raise InvalidParameterError(
            "The 'example_inputs' parameter of select_layers has 0 rows; give at "
            "least one example."
        )
    recorders = _run_pass(
        model,
        hooked,
        [x],
        reduce=reduce,
        output_key=output_key,
        total=None,
        keep_raw=True,
        strict=explicit is not None,
    )
    if explicit is not None:
        return LayerSelection(explicit, {}, _shapes(recorders, explicit))

    assert found is not None
    skipped: Dict[str, str] = OrderedDict()
    kept: Dict[str, nn.Module] = OrderedDict()

    def consider(pairs: List[Tuple[str, nn.Module]]) -> None:
        for name, module in pairs:
            rec = recorders[name]
            if rec.reduce_error and rec.calls == 1:  # the user's reduce, not a skip
                raise InvalidParameterError(f"Layer {name!r} {rec.error}.")
            reason = _skip_reason(rec, rows, kept, recorders)
            if reason is None:
                kept[name] = module
            else:
                skipped[name] = reason

    consider(found.primary)
    if not kept:
        if found.primary:
            logger.debug("no block or activation is recordable; using Linear/Conv")
        consider(found.fallback)
    consider([(out_name, model)])
    for name, block in found.inside.items():
        skipped[name] = f"inside block {block!r}"
    # Model order for the reasons too.
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    order[out_name] = len(order)
    skipped = OrderedDict(sorted(skipped.items(), key=lambda kv: order.get(kv[0], 0)))
    selection = LayerSelection(kept, skipped, _shapes(recorders, kept))
    logger.info("%s", selection.summary())
    return selection


def _skip_reason(
    rec: _Recorder,
    rows: int,
    kept: Mapping[str, nn.Module],
    recorders: Mapping[str, _Recorder],
) -> Optional[str]:
    if rec.calls == 0:
        return "not called in the pass"
    if rec.calls > 1:
        return f"called {rec.calls} times per pass"
    if rec.error is not None:
        return rec.error
    if rec.rows != rows:
        return f"first axis is not the batch ({rec.rows} rows for {rows} samples)"
    for other in kept:
        if _same_tensor(recorders[other], rec):
            return f"same tensor as {other!r}"
    return None


def _same_tensor(a: _Recorder, b: _Recorder) -> bool:
    if a.raw is None or b.raw is None or a.ptr is None or a.ptr != b.ptr:
        return False
    ra, rb = a.raw.reshape(a.raw.shape[0], -1), b.raw.reshape(b.raw.shape[0], -1)
    return ra.shape == rb.shape and bool(torch.equal(ra, rb))


def _shapes(
    recorders: Mapping[str, _Recorder], names: Iterable[str]
) -> Dict[str, Dict[str, Any]]:
    return {
        name: {
            "shape": [int(s) for s in (recorders[name].shape or ())],
            "n_units": int(recorders[name].width or 0),
        }
        for name in names
    }


# ---------------------------------------------------------------- recording
def _check_reduce(reduce: Any, owner: str) -> None:
    if not isinstance(reduce, str) or reduce not in REDUCE_OPTIONS:
        raise InvalidParameterError(
            f"The 'reduce' parameter of {owner} must be one of "
            f"{list(REDUCE_OPTIONS)}. Got {reduce!r} instead."
        )


def _as_tensor(x: Any) -> Any:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _as_structure(x: Any, what: str) -> Any:
    """Return a tensor, tuple/list or mapping of tensors (arrays converted), or None."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return _as_tensor(x)
    if isinstance(x, Mapping):
        if not x:
            raise InvalidParameterError(f"The {what} mapping is empty.")
        values = {k: _as_tensor(v) for k, v in x.items()}
        bad = [k for k, v in values.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise InvalidParameterError(
                f"The {what} mapping must hold tensors or arrays; {bad[0]!r} is a "
                f"{type(values[bad[0]]).__name__}."
            )
        return values
    if isinstance(x, (tuple, list)) and x:
        items = [_as_tensor(v) for v in x]
        if all(isinstance(v, torch.Tensor) for v in items):
            return tuple(items) if isinstance(x, tuple) else items
    return None


def _batches(inputs: Any, batch_size: int) -> Iterator[Any]:
    structure = _as_structure(inputs, "inputs")
    if structure is not None:
        size = n_rows(structure)
        for start in range(0, size, batch_size):
            yield slice_rows(structure, slice(start, start + batch_size))
        return
    if not isinstance(inputs, Iterable) or isinstance(inputs, (str, bytes)):
        raise InvalidParameterError(
            "The probe inputs must be a tensor, an array, a tuple/list or mapping "
            "of tensors, or an iterable of batches (e.g. a DataLoader). Got "
            f"{type(inputs).__name__} instead."
        )
    for batch in inputs:  # a DataLoader or any iterable of batches
        if isinstance(batch, (tuple, list)):
            if not batch:
                raise InvalidParameterError("A batch of the probe set is empty.")
            batch = batch[0]  # (inputs, labels, ...)
        found = _as_structure(batch, "batch")
        if found is None:
            raise InvalidParameterError(
                "Batches of the probe set must be tensors, mappings of tensors or "
                "(inputs, labels, ...) tuples. Got a batch of type "
                f"{type(batch).__name__}."
            )
        yield found


def _first_tensor(output: Any) -> Optional[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _batch_first(module: nn.Module) -> Optional[bool]:
    """Return the module's ``batch_first`` flag (None where it has none).

    Transformer layers keep it on their attention (``self_attn``), a
    ``nn.TransformerEncoder``/``Decoder`` on its first layer's attention.
    """
    flag = getattr(module, "batch_first", None)
    if flag is None and isinstance(
        module, (nn.TransformerEncoder, nn.TransformerDecoder)
    ):
        module = module.layers[0] if len(module.layers) else module
    if flag is None:
        flag = getattr(getattr(module, "self_attn", None), "batch_first", None)
    return flag if isinstance(flag, bool) else None


def _layer_tensor(
    module: nn.Module, output: Any
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Return the tensor a layer records, batch first, and its token mask if any.

    Recurrent modules give their sequence output (the first element); a
    module with ``batch_first=False`` has its first two axes swapped; a
    packed or nested sequence is padded, and its mask comes with it.
    """
    if isinstance(module, nn.RNNBase) and isinstance(output, tuple):
        output = output[0]
    if isinstance(output, PackedSequence):
        padded, lengths = pad_packed_sequence(output, batch_first=True)
        steps = torch.arange(padded.shape[1], device=padded.device)
        return padded, steps[None, :] < lengths.to(padded.device)[:, None]
    t = _first_tensor(output)
    if t is None:
        return None, None
    if t.is_nested:
        lengths = torch.tensor([int(u.shape[0]) for u in t.unbind()], device=t.device)
        padded = t.to_padded_tensor(0.0)
        steps = torch.arange(padded.shape[1], device=padded.device)
        return padded, steps[None, :] < lengths[:, None]
    if _batch_first(module) is False and t.ndim >= 2:
        t = t.transpose(0, 1)
    return t, None


def _attention_mask(batch: Any) -> Optional[torch.Tensor]:
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.ndim == 2:
            return mask != 0
    return None


class _ReduceError(Exception):
    """A layer's output that ``reduce`` cannot take (the message is a predicate)."""


def _reduce(
    t: torch.Tensor,
    module: nn.Module,
    reduce: str,
    mask: Optional[torch.Tensor],
) -> torch.Tensor:
    """Turn one layer's batch-first output into (batch, units)."""
    if t.ndim <= 2:
        return t.reshape(t.shape[0], -1)
    channels_first = t.ndim >= 4 or isinstance(module, CHANNELS_FIRST_TYPES)
    if channels_first:
        if reduce in ("auto", "flatten"):
            return t.reshape(t.shape[0], -1)
        if reduce == "first":
            raise _ReduceError(
                f"returns (batch, channels, ...) of shape {tuple(t.shape)}, which "
                "reduce='first' cannot take (it keeps token 0 of a (batch, tokens, "
                "hidden) output); use reduce='mean', 'max' or 'flatten'"
            )
        axes = tuple(range(2, t.ndim))
        return t.mean(dim=axes) if reduce == "mean" else t.amax(dim=axes)
    # (batch, tokens, hidden)
    if reduce == "flatten":
        return t.reshape(t.shape[0], -1)
    if reduce == "first":
        return t[:, 0]
    if mask is not None and tuple(mask.shape) != tuple(t.shape[:2]):
        mask = None  # the layer's tokens are not the input's tokens
    if reduce == "max":
        if mask is None:
            return t.amax(dim=1)
        filled = t.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)
        empty = ~mask.any(dim=1)
        return (
            torch.where(empty[:, None], t.amax(dim=1), filled)
            if empty.any()
            else filled
        )
    if mask is None:
        return t.mean(dim=1)
    weights = mask.to(t.dtype)[:, :, None]
    counts = weights.sum(dim=1).clamp_min(1.0)
    return (t * weights).sum(dim=1) / counts


class _PassContext:
    """What every hook of a pass shares: the current batch's token mask."""

    def __init__(self) -> None:
        self.mask: Optional[torch.Tensor] = None


class _Recorder:
    """Forward hook of one layer: copies each batch's (batch, units) output.

    With the number of samples known in advance, each batch is copied once
    into a preallocated ``(n_samples, n_units)`` buffer on the layer's device;
    otherwise each batch is copied and the copies are concatenated at the end.
    A copy is needed either way: a later module may modify the output in
    place (``ReLU(inplace=True)``). With ``keep_raw`` (the selection pass) the
    first output is also kept as is, to tell identical tensors apart.
    """

    def __init__(
        self,
        name: str,
        reduce: str,
        total: Optional[int],
        context: _PassContext,
        *,
        keep_raw: bool = False,
    ):
        self.name = name
        self.reduce = reduce
        self.total = total
        self.context = context
        self.keep_raw = keep_raw
        self.buffer: Optional[torch.Tensor] = None
        self.pos = 0
        self.chunks: List[torch.Tensor] = []
        self.calls = 0
        self.rows = 0
        self.width: Optional[int] = None
        self.shape: Optional[Tuple[int, ...]] = None
        self.error: Optional[str] = None
        self.reduce_error = False
        self.raw: Optional[torch.Tensor] = None
        self.ptr: Optional[int] = None

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        self.calls += 1
        if self.calls > 1 and self.keep_raw:
            return  # the selection pass only counts further calls
        out, mask = _layer_tensor(module, output)
        self.add(module, out, mask, output)

    def add(
        self,
        module: nn.Module,
        out: Optional[torch.Tensor],
        mask: Optional[torch.Tensor],
        output: Any = None,
    ) -> None:
        if out is None:
            self.error = (
                f"returned {type(output).__name__}, which holds no tensor; choose "
                "a layer that returns a tensor"
            )
            return
        out = out.detach()
        if out.ndim == 0:
            out = out.reshape(1, 1)
        self.shape = tuple(out.shape[1:])
        if self.keep_raw and self.raw is None:
            self.ptr = out.data_ptr() if out.numel() else None
            self.raw = out.clone()
        try:
            t = _reduce(
                out, module, self.reduce, self.context.mask if mask is None else mask
            )
        except _ReduceError as exc:
            self.error = str(exc)
            self.reduce_error = True
            return
        self.rows = int(t.shape[0])
        width = int(t.shape[1])
        if self.width is None:
            self.width = width
        elif width != self.width:
            self.error = (
                f"produced outputs of different widths in different batches "
                f"({self.width} and {width} units); choose another layer or use "
                "reduce='mean'"
            )
            return
        dtype = t.dtype
        if dtype in (torch.float16, torch.bfloat16) or not torch.is_floating_point(t):
            dtype = torch.float32
        if self.total is None:
            self.chunks.append(t.to(dtype=dtype, copy=True))
            return
        if self.buffer is None:
            self.buffer = torch.empty((self.total, width), dtype=dtype, device=t.device)
        if self.pos + self.rows <= self.total:
            self.buffer[self.pos : self.pos + self.rows].copy_(t)
        self.pos += self.rows

    def result(self) -> torch.Tensor:
        if self.buffer is not None:
            return self.buffer[: self.pos]
        return torch.cat(self.chunks, dim=0) if len(self.chunks) > 1 else self.chunks[0]


def record_activations(
    model: nn.Module,
    layers: Union[LayerSpec, Dict[str, nn.Module], LayerSelection],
    inputs: Any,
    *,
    batch_size: int = 256,
    reduce: str = "auto",
    device: Union[str, torch.device, None] = "cpu",
    output_key: OutputKey = None,
) -> Dict[str, torch.Tensor]:
    """Run the model over a probe set and return each chosen layer's activations.

    One pass under ``torch.no_grad()`` in evaluation mode with autocast
    disabled, in batches, with a forward hook on each chosen layer registered
    for the pass only. The hooks are removed, the training flag of every
    submodule restored and the RNG states (torch CPU and CUDA, numpy,
    python) put back in ``finally``, also when the model raises.

    Parameters
    ----------
    model : nn.Module
        The model; DDP, ``DataParallel`` and ``torch.compile`` are unwrapped
        (the eager module is run).
    layers : None, LayerSelection, dict of str to nn.Module, or a layer spec
        The layers to record (a spec is anything :func:`resolve_layers`
        takes). ``None`` runs :func:`select_layers` on the first
        two rows of ``inputs`` first; pass its result to record many times.
    inputs : Tensor, ndarray, tuple/list/mapping of tensors, or iterable
        The probe set. A tensor or array is fed as ``model(x)``, a tuple or
        list of tensors as ``model(*x)``, a mapping as ``model(**x)`` (all
        sliced into batches along the first axis). Any other iterable (a
        DataLoader) yields batches of those kinds or ``(inputs, labels, ...)``
        tuples (the first element is fed). Inputs are moved to the model's
        device; floating tensors are cast to its float dtype, integer tensors
        (token ids, masks) are kept.
    batch_size : int, default=256
        Batch size when ``inputs`` is not an iterable of batches.
    reduce : {"auto", "flatten", "mean", "max", "first"}, default="auto"
        How each layer's output becomes ``(n_samples, n_units)``, by its
        shape (see Notes).
    device : str or torch.device or None, default="cpu"
        Where the returned activations live; ``None`` keeps them on the
        model's device.
    output_key : None, int or str, default=None
        Which element of what ``forward`` returns is the model's output
        (recorded as ``"output"``): ``None`` takes a tensor as is, or the
        ``logits`` of a mapping or ``ModelOutput``; an int indexes a tuple; a
        str is a key or attribute. See
        :func:`ibmonitor.structures.select_output`.

    Returns
    -------
    activations : dict of str to Tensor of shape (n_samples, n_units)
        Detached copies, float32 (or float64 for a float64 model), in the
        order of the layers.

    Raises
    ------
    InvalidParameterError
        Bad ``reduce`` or ``batch_size``, an empty probe set, a layer that
        produced no output during the pass, was called more than once per
        batch, or returned a first dimension other than the batch size;
        ``reduce="first"`` on a convolutional map; a model output that
        ``output_key`` does not find.

    Notes
    -----
    ``reduce`` by the rank of a layer's output (batch first):

    ===========================  ==========  ==================  ==============
    output                       ``"auto"``  ``"mean"``/``"max"`` ``"first"``
    ===========================  ==========  ==================  ==============
    (batch, units)               as is       as is                as is
    (batch, tokens, hidden)      mean        mean/max over tokens token 0 (CLS)
    (batch, channels, *spatial)  flatten     mean/max per channel error
    ===========================  ==========  ==================  ==============

    ``"flatten"`` always flattens (tokens x hidden, channels x spatial). Over
    tokens, ``"mean"`` and ``"max"`` skip padding: the tokens where the
    batch's ``attention_mask`` (a ``(batch, tokens)`` entry of a mapping
    input) is 0, or the padding of a packed or nested sequence. A rank-3
    output of a Conv, BatchNorm, InstanceNorm or pooling module is
    ``(batch, channels, length)`` and follows the last row. Recurrent
    modules (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) record their sequence
    output (the first element of the tuple they return); any module with
    ``batch_first=False`` (recurrent modules, transformer layers) has its
    output read as ``(time, batch, ...)`` and transposed to batch first.
    """
    _check_reduce(reduce, "record_activations")
    if (
        not isinstance(batch_size, (int, np.integer))
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise InvalidParameterError(
            "The 'batch_size' parameter of record_activations must be an int in "
            f"the range [1, inf). Got {batch_size!r} instead."
        )
    model = unwrap_model(model)
    structure = _as_structure(inputs, "inputs")
    if isinstance(layers, LayerSelection):
        modules: Dict[str, nn.Module] = OrderedDict(layers.layers)
    elif isinstance(layers, dict) and all(
        isinstance(m, nn.Module) for m in layers.values()
    ):
        modules = OrderedDict(layers)
    elif layers is None:
        if structure is None:  # an iterable: keep its batches for two passes
            with preserve_state(model):  # iterating a DataLoader draws RNG
                inputs = list(_batches(inputs, int(batch_size)))
            example = inputs[0] if inputs else None
        else:
            example = slice_rows(structure, slice(0, 2))
        if example is None or n_rows(example) == 0:
            raise _empty_probe_error()
        modules = select_layers(
            model, None, example, reduce=reduce, output_key=output_key
        ).layers
    else:
        modules = resolve_layers(model, layers)
    if not modules:
        raise InvalidParameterError("No layers to monitor: the selection is empty.")
    if structure is not None:
        total: Optional[int] = n_rows(structure)
        batches: Iterable[Any] = _batches(structure, int(batch_size))
    else:
        total = None
        batches = (
            inputs if isinstance(inputs, list) else _batches(inputs, int(batch_size))
        )
    recorders = _run_pass(
        model,
        modules,
        batches,
        reduce=reduce,
        output_key=output_key,
        total=total,
        keep_raw=False,
        strict=True,
    )
    dev = model_device(model)
    out_device = dev if device is None else torch.device(device)
    result: Dict[str, torch.Tensor] = OrderedDict()
    for name, rec in recorders.items():
        result[name] = rec.result().to(out_device)
    return result


def _empty_probe_error() -> InvalidParameterError:
    return InvalidParameterError(
        "The probe set is empty: the pass over 'inputs' saw 0 samples. Give at "
        "least 2 examples."
    )


def _run_pass(
    model: nn.Module,
    modules: Dict[str, nn.Module],
    batches: Iterable[Any],
    *,
    reduce: str,
    output_key: OutputKey,
    total: Optional[int],
    keep_raw: bool,
    strict: bool,
) -> Dict[str, _Recorder]:
    """One pass: hooks on ``modules`` (the root model is fed its output)."""
    dev = model_device(model)
    dtype = model_float_dtype(model)
    context = _PassContext()
    recorders = OrderedDict(
        (name, _Recorder(name, reduce, total, context, keep_raw=keep_raw))
        for name in modules
    )
    output_names = [name for name, m in modules.items() if m is model]
    handles = []
    n_samples = 0
    try:
        with preserve_state(model), torch.no_grad(), autocast_disabled(dev):
            model.eval()
            for name, module in modules.items():
                if module is not model:
                    handles.append(module.register_forward_hook(recorders[name]))
            for batch in batches:
                size = n_rows(batch)
                if size == 0:
                    continue
                calls_before = {n: r.calls for n, r in recorders.items()}
                batch = move(batch, dev, dtype)
                context.mask = _attention_mask(batch)
                returned = call_model(model, batch)
                for name in output_names:
                    rec = recorders[name]
                    rec.calls += 1
                    out = select_output(
                        returned, output_key, owner="record_activations"
                    )
                    rec.add(model, out, None, returned)
                if strict:
                    for name, rec in recorders.items():
                        module = modules[name]
                        hooked = None if module is model else module
                        _check_batch(name, rec, calls_before[name], size, hooked)
                n_samples += size
    finally:
        for handle in handles:
            handle.remove()
    if n_samples == 0:
        raise _empty_probe_error()
    return recorders


def _check_batch(
    name: str,
    rec: _Recorder,
    calls_before: int,
    size: int,
    module: Optional[nn.Module],
) -> None:
    calls = rec.calls - calls_before
    if rec.error is not None:
        raise InvalidParameterError(f"Layer {name!r} {rec.error}.")
    if calls == 0:
        raise InvalidParameterError(
            f"Layer {name!r} produced no output during the forward pass. Is it "
            "used in forward()? A module that is defined but not called, or one "
            "applied functionally (F.relu, attention's out_proj), cannot be "
            "hooked; choose another layer from model.named_modules() or use the "
            "default selection (layers=None)."
        )
    if calls > 1:
        raise InvalidParameterError(
            f"Layer {name!r} was called {calls} times in one forward pass; its "
            "activations are ambiguous. Choose a module that is called once per "
            "forward pass, or use the default selection (layers=None), which "
            "skips such modules."
        )
    got = rec.rows
    if got != size:
        hint = ""
        if module is not None and _batch_first(module) is False:
            hint = (
                " (its output was read as (time, batch, ...) because it has "
                "batch_first=False)"
            )
        raise InvalidParameterError(
            f"Layer {name!r} returned {got} rows for a batch of {size} samples; "
            f"its first dimension must be the batch{hint}."
        )
