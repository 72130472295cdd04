"""Faust agents, one module per stream: thin loops that decode, dedupe and call pipeline functions."""
