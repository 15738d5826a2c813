"""Models nobody here wrote, built offline from small configurations.

Shared by ``tests/test_models.py`` (each one monitored for real) and
``scripts/bench_models.py`` (recording time and memory per model, the
"models tried" table of docs/models.md). Nothing is downloaded: torchvision
and timm models are built with random weights, Hugging Face models from tiny
configurations, token ids are generated.

Importing this module first makes PyPI's torchvision importable on a CPU-only
torch build (:func:`define_torchvision_ops`).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
from torch import nn

_TORCHVISION_LIBRARY = None
#: Where ``make test`` installs torchvision and timm (see the Makefile): a
#: folder of their own, so that nothing else (lightning, torchmetrics) imports
#: a torchvision that cannot load beside the CPU build of torch.
MODELS_DIR = Path(__file__).resolve().parents[1] / ".venv" / "torchvision-cpu"


def define_torchvision_ops() -> None:
    """Let ``import torchvision`` work when its compiled operators cannot load.

    PyPI's torchvision wheel is built against a CUDA torch; with this project's
    CPU build of torch its extension ``torchvision/_C.so`` fails to load, and
    ``import torchvision`` then stops with ``RuntimeError: operator
    torchvision::nms does not exist`` (its ``_meta_registrations`` registers
    fake kernels for ``nms`` and ``qnms`` whether or not the extension loaded).
    Defining those two operators' schemas (as torchvision's C++ code does) lets
    the import finish; the models, transforms and layers used here need no
    compiled operator, and calling ``torchvision.ops.nms`` would still raise.
    Where the extension loads (a matching build, a CUDA machine) nothing is
    done.
    """
    global _TORCHVISION_LIBRARY
    if _TORCHVISION_LIBRARY is not None:
        return
    if MODELS_DIR.is_dir() and str(MODELS_DIR) not in sys.path:
        sys.path.append(str(MODELS_DIR))
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    compiled = sorted(Path(spec.origin).parent.glob("_C*.so"))
    if not compiled:
        return
    try:
        torch.ops.load_library(str(compiled[0]))
        return
    except (OSError, RuntimeError):
        pass
    library = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        library.define(
            f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )
    _TORCHVISION_LIBRARY = library  # kept alive: the definitions live with it


define_torchvision_ops()


@dataclass
class ModelCase:
    """A model, a probe set for it, and the monitor options it needs."""

    name: str
    model: nn.Module
    inputs: Any
    labels: torch.Tensor
    #: Monitor options the model needs (``output_key``).
    options: Dict[str, Any] = field(default_factory=dict)


def _images(n: int, channels: int = 3, size: int = 32, classes: int = 10):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, channels, size, size, generator=g),
        torch.randint(0, classes, (n,), generator=g),
    )


def _tokens(n: int, length: int = 16, vocab: int = 100, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    for i, k in enumerate(lengths.tolist()):
        mask[i, k:] = 0
        ids[i, k:] = 0
    return ids, mask, torch.randint(0, classes, (n,), generator=g)


def torchvision_resnet18(n: int = 64) -> ModelCase:
    """torchvision's ResNet-18 (random weights) on 32x32 images."""
    import torchvision

    torch.manual_seed(0)
    x, y = _images(n)
    return ModelCase(
        "torchvision resnet18", torchvision.models.resnet18(num_classes=10), x, y
    )


def timm_mobilenetv3(n: int = 64) -> ModelCase:
    """timm's MobileNetV3-small (x0.5, random weights) on 32x32 images."""
    import timm

    torch.manual_seed(0)
    x, y = _images(n)
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10)
    return ModelCase("timm mobilenetv3_small_050", model, x, y)


def hf_bert(n: int = 64) -> ModelCase:
    """A 2-layer BERT (hidden 32) for sequence classification; dict inputs."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=3,
    )
    ids, mask, y = _tokens(n)
    return ModelCase(
        "Hugging Face BERT",
        BertForSequenceClassification(config),
        {"input_ids": ids, "attention_mask": mask},
        y,
    )


def hf_vit(n: int = 64) -> ModelCase:
    """A 2-layer ViT (hidden 32, 16x16 images, 4x4 patches) for classification."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=10,
    )
    x, y = _images(n, channels=1, size=16)
    return ModelCase("Hugging Face ViT", ViTForImageClassification(config), x, y)


class TransformerClassifier(nn.Module):
    """Token embedding, a 2-layer ``nn.TransformerEncoder``, mean pooling, a head."""

    def __init__(self, vocab: int = 100, dim: int = 32, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(
            dim, nhead=2, dim_feedforward=64, dropout=0.1, batch_first=True
        )
        self.enc = nn.TransformerEncoder(
            layer, num_layers=2, enable_nested_tensor=False
        )
        self.fc = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(self.embed(ids)).mean(dim=1))


def transformer_encoder(n: int = 64) -> ModelCase:
    """A classifier around ``nn.TransformerEncoder`` (token ids in)."""
    torch.manual_seed(0)
    ids, _, y = _tokens(n)
    return ModelCase(
        "nn.TransformerEncoder classifier", TransformerClassifier(), ids, y
    )


class LSTMClassifier(nn.Module):
    """Embedding, a 1-layer LSTM, the last hidden state into a linear head."""

    def __init__(
        self, vocab: int = 100, dim: int = 16, classes: int = 3, batch_first=True
    ):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, 24, batch_first=batch_first)
        self.fc = nn.Linear(24, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.embed(ids)
        if not self.batch_first:
            emb = emb.transpose(0, 1)
        _, (h, _) = self.lstm(emb)
        return self.fc(h[-1])


def lstm(n: int = 64) -> ModelCase:
    """An LSTM classifier (batch_first=True)."""
    torch.manual_seed(0)
    ids, _, y = _tokens(n)
    return ModelCase("LSTM classifier", LSTMClassifier(), ids, y)


class TupleOutput(nn.Module):
    """Returns ``(aux, logits)``: the logits are the second element."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 16), nn.ReLU())
        self.aux = nn.Linear(16, 5)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        return self.aux(h), self.head(h)


class DictOutput(nn.Module):
    """Returns ``{"features": ..., "logits": ...}``."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 16), nn.Tanh())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        return {"features": h, "logits": self.head(h)}


def _vectors(n: int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


def tuple_output(n: int = 64) -> ModelCase:
    """A model returning ``(aux, logits)``, monitored with ``output_key=1``."""
    torch.manual_seed(0)
    x, y = _vectors(n)
    return ModelCase("tuple output", TupleOutput(), x, y, {"output_key": 1})


def dict_output(n: int = 64) -> ModelCase:
    """A model returning a dict with ``logits`` (found without options)."""
    torch.manual_seed(0)
    x, y = _vectors(n)
    return ModelCase("dict output", DictOutput(), x, y)


def compiled_cnn(n: int = 64, backend: str = "eager") -> ModelCase:
    """A small CNN under ``torch.compile`` (``backend="eager"`` by default: fast)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )
    x, y = _images(n, channels=1, size=8)
    return ModelCase("torch.compile CNN", torch.compile(net, backend=backend), x, y)


#: Every case, by short name.
CASES: Dict[str, Callable[..., ModelCase]] = {
    "resnet18": torchvision_resnet18,
    "timm": timm_mobilenetv3,
    "bert": hf_bert,
    "vit": hf_vit,
    "transformer": transformer_encoder,
    "lstm": lstm,
    "tuple_output": tuple_output,
    "dict_output": dict_output,
    "compiled": compiled_cnn,
}


def case_names() -> List[str]:
    """Names of the cases, in table order."""
    return list(CASES)
