"""Serving: the AIF-style HTTP ranking service, its caches, model versions and exports (docs/serving.md)."""
