"""Outputs: the versioned JSON document and rich tables."""
