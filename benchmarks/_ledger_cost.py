"""The ledger's cost per video on loopback S3 (moto): storage requests and wall time.

It runs the ledger's happy path exactly as the tasks do (`reserve`, `holding`, the record
written at acceptance, the completion update, the delivery entry) for fresh fingerprints
against moto's S3 server, counting the HTTP requests the server receives, next to a run
without a ledger (today's path on local runs: no storage request at all).
"""

from __future__ import annotations

import logging
import socket
import statistics
import time
import uuid

from _support import verdict

from prefect_omnihuman.results import LedgerDelivery, LedgerRecord
from prefect_omnihuman.storage.ledger import GenerationLedger
from prefect_omnihuman.storage.media_storage import MediaStorage

REQUESTS_TARGET = 6
SECONDS_TARGET = 0.2


class _CountRequests(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "HTTP/1.1" in record.getMessage():
            self.count += 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_video(ledger: GenerationLedger) -> None:
    fingerprint = uuid.uuid4().hex * 2
    reservation = ledger.reserve(fingerprint)
    assert reservation.claim is not None, "moto's S3 should support exclusive create"
    now = time.time()
    record = LedgerRecord(
        fingerprint=fingerprint, generation_id=f"{uuid.uuid4()}:m", model="m",
        service="http://127.0.0.1", audio_seconds=3.0, status="submitted", submitted_at=now,
        credits=1_890_000, claim=reservation.claim.number,
    )  # fmt: skip
    with ledger.holding(fingerprint, reservation.claim):
        ledger.write(record)
    ledger.write(record.model_copy(update={"status": "completed", "completed_at": now}))
    assert record.generation_id is not None
    ledger.add_delivery(
        fingerprint,
        LedgerDelivery(
            generation_id=record.generation_id,
            location="s3://bench/videos/v.mp4",
            stamp="x",
            size_bytes=1,
            duration=3.0,
            width=512,
            height=512,
            delivered_at=now,
        ),
    )


def ledger_cost(videos: int) -> bool:
    """Print the ledger's requests and wall time per video; whether both targets are met."""
    from moto.server import ThreadedMotoServer

    print(f"\n4. The ledger on loopback S3 (moto), per video ({videos} videos + 1 warm-up)")
    counter = _CountRequests()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(counter)
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        options = {
            "key": "bench", "secret": "bench-secret",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }  # fmt: skip
        storage = MediaStorage(base_url="s3://bench/omnihuman", storage_options=options)
        ledger = GenerationLedger(storage)
        ledger._fs.call_s3("create_bucket", Bucket="bench")
        before = counter.count
        one_video(ledger)  # the first claim of the process also probes the store
        first = counter.count - before
        seconds, requests = [], []
        for _ in range(videos):
            before, started = counter.count, time.perf_counter()
            one_video(ledger)
            seconds.append(time.perf_counter() - started)
            requests.append(counter.count - before)
    finally:
        server.stop()
        werkzeug.removeHandler(counter)
    per_video = statistics.median(requests)
    wall = statistics.median(seconds)
    ok = first <= REQUESTS_TARGET and per_video <= REQUESTS_TARGET and wall <= SECONDS_TARGET
    print(
        f"   storage requests: {per_video:g} per video ({first} on the first, which probes the "
        f"store); without a ledger (local runs, today's path): 0; target <= {REQUESTS_TARGET}"
    )
    print(
        f"   wall time: {wall * 1000:.0f} ms per video (median), without a ledger: 0 ms; "
        f"target <= {SECONDS_TARGET * 1000:.0f} ms  {verdict(ok)}"
    )
    return ok
