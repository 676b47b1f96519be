"""Synthetic test-data factories (granules); see gosat_pipeline.testing."""

from __future__ import annotations

__all__: list[str] = []
