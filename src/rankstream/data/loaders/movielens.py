"""MovieLens loader (placeholder until the MovieLens task lands)."""
