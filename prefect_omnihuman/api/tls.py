"""One verified TLS context for every HTTP client this package opens in a process.

httpx builds a new `ssl.SSLContext` for each client it creates, and building one loads the
whole CA bundle: tens of milliseconds of CPU, even for plain-HTTP URLs that never use it.
A flow makes several clients per video (API, result download, staging), so they share this
one. An `SSLContext` is safe to share between threads and event loops.
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx

__all__ = ["shared_tls_context"]


@cache
def shared_tls_context() -> ssl.SSLContext:
    """The context httpx would build by default (certifi's CA bundle; `SSL_CERT_FILE` and
    `SSL_CERT_DIR` are honoured), built once per process on first use."""
    return httpx.create_ssl_context()
