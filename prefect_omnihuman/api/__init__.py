"""The AI/ML API's HTTP client for OmniHuman 1.5, usable without Prefect.

- `client`: `OmniHumanClient` / `AsyncOmniHumanClient`: submit, poll, wait, download, speech.
- `models`: the request and response models, model limits and status phases.
- `retries`: which HTTP failures are retried, with what backoff.
- `polling`: `PollSchedule`, how often a running generation is asked about.
- `pricing`: credits in US dollars (2,000,000 to $1) and `format_cost` for readable costs.
- `tls`: the TLS context the package's HTTP clients in one thread share.

May import: `prefect_omnihuman.errors` and this package. Never Prefect, never a higher part.
"""
