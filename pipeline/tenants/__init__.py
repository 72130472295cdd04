"""Tenants: their records, quotas, users and per-resource provisioning status, and the event logic."""
