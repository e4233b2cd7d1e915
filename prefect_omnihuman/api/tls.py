"""A verified TLS context per thread, shared by every HTTP client the package opens there.

httpx builds a new `ssl.SSLContext` for each client it creates, and building one loads the
whole CA bundle: tens of milliseconds of CPU, even for plain-HTTP URLs that never use it.
A flow makes several clients per video (API, result download, staging), so they share one.
It is one per thread, not one per process, because httpcore sets the context's ALPN
protocols on every TLS connection it opens, which must not race with another thread's
handshake on the same context.
"""

from __future__ import annotations

import ssl
import threading

import httpx

__all__ = ["shared_tls_context"]

_per_thread = threading.local()


def shared_tls_context() -> ssl.SSLContext:
    """The context httpx would build by default (its CA bundle; `SSL_CERT_FILE` and
    `SSL_CERT_DIR` are honoured), built once per thread on first use: a change to those
    variables applies to threads that have not opened a client yet."""
    context: ssl.SSLContext | None = getattr(_per_thread, "context", None)
    if context is None:
        context = httpx.create_ssl_context()
        _per_thread.context = context
    return context
