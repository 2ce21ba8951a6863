"""Dataset loaders: each turns a public format into the canonical EventLog and registers itself."""

from rankstream.data.loaders import movielens, seqtext  # noqa: F401  (registration)
