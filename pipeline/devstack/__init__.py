"""Local stack launcher: installs, starts, checks and stops the real servers the service talks to.

Each service is one module (how to install it, start it, check that it really answers, and which
environment variables point the service at it); ``stack.py`` orchestrates them.
"""
