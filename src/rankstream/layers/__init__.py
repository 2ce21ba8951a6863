"""Shared building blocks: every block lives here once and models compose them."""
