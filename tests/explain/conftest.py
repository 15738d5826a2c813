"""Fixtures for the explanation tests: one thread, seeded generators."""

from __future__ import annotations

from _fixtures import one_thread_and_seeded  # noqa: F401 (autouse)
