"""Losses. Each returns (loss, diagnostics dict)."""
