"""Command-line front: one module per command; parse, call the feature, print."""
