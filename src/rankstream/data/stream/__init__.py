"""Streaming replay with delayed labels: event sources (Parquet, Redis), the label join, and
each method's samples per time segment."""
