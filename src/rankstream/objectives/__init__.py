"""Training objectives (losses) shared by models."""
