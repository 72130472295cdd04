"""Local stack launcher: installs, starts, checks and stops the real servers the service talks to.

Each service is one module (how to install it, start it, check that it really answers, and which
environment variables point the service at it); ``stack.py`` orchestrates them. The stand-ins of servers
the team does not run locally (``openproject_standin``, ``derivatives_standin``) live here too.

Development and test tooling only: not in the service's wheel (``pyproject.toml`` packages only ``pipeline``,
``agents``, ``tables``, ``web``); run ``python -m devstack ...`` from the repository root.
"""
