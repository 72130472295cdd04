"""The REST API (/api/v1), the live dashboard (/ui/), and /health, /ready, /metrics of the worker."""
