"""Provisioning service: the domain logic and plumbing of the stream-processing pipeline."""
