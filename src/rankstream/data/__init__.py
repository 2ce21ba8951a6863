"""Data stage: the canonical event log, loaders, preparation, splits and jagged batches."""
