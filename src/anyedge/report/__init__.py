"""Reports of the digital twin's runs: one self-contained HTML page per comparison."""

from __future__ import annotations

from anyedge.report.html import render, write

__all__ = ["render", "write"]
