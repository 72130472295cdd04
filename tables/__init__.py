"""Changelog-backed tables, one module per table, each with its key and value types and a help text.

Keys of per-tenant tables are the tenant id (or ``tenant/sub-key``), written from agents consuming topics
keyed by tenant id, so one worker holds all state of a tenant.
"""
