"""Synthetic test-data factories (inventories); see gosat_pipeline.testing."""

from __future__ import annotations

__all__: list[str] = []
