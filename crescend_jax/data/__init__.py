"""Corpora, rendering and the embedding store."""
