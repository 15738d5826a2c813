"""Activation kinds and the saturated fraction (computed once per recorded layer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ibmonitor.activations import activation_kind, saturated_fraction


def test_activation_kind_of_common_modules():
    assert activation_kind(nn.Tanh()) == "tanh"
    assert activation_kind(nn.Softsign()) == "tanh"
    assert activation_kind(nn.Sigmoid()) == "sigmoid"
    assert activation_kind(nn.GELU()) == "relu"
    assert activation_kind(nn.Linear(2, 2)) is None


def test_saturated_fraction_tanh_counts_values_within_one_percent_of_bounds():
    t = np.array([[0.995, -0.991], [0.98, 0.0], [1.0, -1.0], [0.5, 0.989]])
    assert saturated_fraction(t, "tanh") == pytest.approx(4 / 8)
    assert saturated_fraction(t, "Tanh") == pytest.approx(4 / 8)


def test_saturated_fraction_sigmoid_uses_bounds_zero_and_one():
    t = np.array([0.0, 0.009, 0.011, 0.5, 0.989, 0.991, 1.0, 0.3])
    assert saturated_fraction(t, "sigmoid") == pytest.approx(4 / 8)


def test_saturated_fraction_none_for_unbounded_kinds_and_no_finite_values():
    t = np.ones((4, 3))
    assert saturated_fraction(t, "relu") is None
    assert saturated_fraction(t, None) is None
    assert saturated_fraction(np.full(3, np.nan), "tanh") is None


def test_saturated_fraction_ignores_nan_and_accepts_tensors():
    t = torch.tensor([[1.0, float("nan")], [0.0, -1.0]], dtype=torch.float16)
    assert saturated_fraction(t, "tanh") == pytest.approx(2 / 3)
