"""Faust agents, one module per stream: thin loops that decode, dedupe and call pipeline functions.

Each agent module declares its agents (and timers) on the app it is given with ``register(app, deps)``; the
composition root (``pipeline/worker.py``) calls them, in the order of its ``AGENT_MODULES``.
"""
