"""The ledger of paid generations, kept in the user's own storage (`<storage>/ledger/`).

Production flows run in fresh containers that share no disk; the one thing every
worker shares is the storage configured for staging and delivery. So what was paid
for lives there, as small JSON files read and written through fsspec:

- `ledger/records/<fingerprint>.json`: one `LedgerRecord` per paid generation,
  written the moment the API accepts the POST and updated on completion, delivery
  and failure. A record superseded by `force_new` is kept beside it as
  `<fingerprint>.superseded-<time>.json`.
- `ledger/deliveries/<fingerprint>/<hash of location>.json`: where its video was
  stored, one small object per destination, so workers delivering at once never
  overwrite each other's entries.
- `ledger/claims/<fingerprint>/<n>.json`: claim number `n` on those inputs, made with
  an exclusive create (S3's `If-None-Match: *` through s3fs, `O_EXCL` on a folder).
  Only the worker whose create succeeded may POST; the others wait for its record.
  A claim carries a lease (holder, host, pid, renewal time): a claim whose holder died
  is taken over by creating claim `n + 1`, which again only one worker can do. If the
  dead holder recorded nothing, it may have been paid for in the instant between its
  POST and its record: the new record is marked `suspected_duplicate`.

Stores whose writes cannot be exclusive are found by a probe on the first claim of a
process; there the run warns once and relies on the local lock and Prefect's cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from prefect_omnihuman.errors import (
    AmbiguousSubmissionError,
    ClaimWaitTimeoutError,
    InputError,
    LedgerError,
    LedgerRecordError,
    OmniHumanError,
)
from prefect_omnihuman.results import LedgerDelivery, LedgerRecord
from prefect_omnihuman.storage.media_storage import (
    MediaStorage,
    filesystem,
    process_alive,
    storage_failure,
)

logger = logging.getLogger("prefect_omnihuman.ledger")

LEDGER_FOLDER = "ledger"
#: Seconds a claim stays live without renewal; its holder renews it a few times per lease.
CLAIM_LEASE_ENV = "OMNIHUMAN_CLAIM_LEASE_SECONDS"
DEFAULT_CLAIM_LEASE_SECONDS = 30.0
#: How long a worker waits for another worker's claim to turn into a record.
CLAIM_WAIT_ENV = "OMNIHUMAN_CLAIM_WAIT_SECONDS"
DEFAULT_CLAIM_WAIT_SECONDS = 600.0
_FIRST_WAIT_SECONDS = 0.2
_MAX_WAIT_STEP_SECONDS = 5.0

#: fsspec protocols whose "xb" is one atomic create on the store itself: O_EXCL on a local
#: or mounted folder, `If-None-Match: *` on S3 (s3fs). fsspec's generic "xb" (and its
#: in-memory store's) checks `exists` first and then writes, which two workers can race.
ATOMIC_CREATE_PROTOCOLS = frozenset({"file", "local", "s3", "s3a"})

#: Ledger roots already probed in this process: root -> exclusive create works.
_exclusive_support: dict[str, bool] = {}
_probe_lock = threading.Lock()


class Claim(BaseModel):
    """Who is paying for a fingerprint right now (the contents of a claim file)."""

    number: int
    holder: str
    host: str
    pid: int
    claimed_at: float
    renewed_at: float
    lease_seconds: float
    state: str = "held"  # "held", or "released" when the holder's POST provably failed

    def describe(self) -> str:
        """Host and process of the holder, for messages."""
        return f"{self.host} pid {self.pid}"

    def is_stale(self, now: float) -> bool:
        """Released, past its lease, or held by a dead process on this host."""
        if self.state == "released" or now - self.renewed_at > self.lease_seconds:
            return True
        return self.host == socket.gethostname() and not process_alive(self.pid)


@dataclass
class Reservation:
    """The outcome of `GenerationLedger.reserve`: a record to reuse, or a claim to pay under.

    Attributes:
        record: The existing record (reuse it; nothing to pay).
        claim: The claim this worker now holds (pay, then `record_submission`).
        suspected_duplicate: The claim replaced one whose holder died unrecorded.
    """

    record: LedgerRecord | None = None
    claim: Claim | None = None
    suspected_duplicate: bool = False


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InputError(
            f"{name}={raw!r} is not a number of seconds", fix=f"unset {name}"
        ) from None


class GenerationLedger:
    """The ledger of paid generations under one storage's `ledger/` folder.

    Example:
        ```python
        from prefect_omnihuman import MediaStorage
        from prefect_omnihuman.storage.ledger import GenerationLedger

        ledger = GenerationLedger(MediaStorage(base_url="s3://media/omnihuman"))
        for record in ledger.records():
            print(record.generation_id, record.status, record.credits)
        ```
    """

    def __init__(self, storage: MediaStorage) -> None:
        self.root = storage.url_for(LEDGER_FOLDER)
        self._options = storage.options_for(self.root)
        self._fs, self._path = filesystem(self.root, self._options)
        self.lease_seconds = _env_seconds(CLAIM_LEASE_ENV, DEFAULT_CLAIM_LEASE_SECONDS)
        self.wait_seconds = _env_seconds(CLAIM_WAIT_ENV, DEFAULT_CLAIM_WAIT_SECONDS)

    # -- paths -------------------------------------------------------------------------------

    def record_url(self, fingerprint: str) -> str:
        """The URL of the record of `fingerprint` (for messages and `ledger show`)."""
        return f"{self.root}/records/{fingerprint}.json"

    def _record_path(self, fingerprint: str) -> str:
        return f"{self._path}/records/{fingerprint}.json"

    def _deliveries_path(self, fingerprint: str) -> str:
        return f"{self._path}/deliveries/{fingerprint}"

    def _claims_path(self, fingerprint: str) -> str:
        return f"{self._path}/claims/{fingerprint}"

    def _claim_path(self, fingerprint: str, number: int) -> str:
        return f"{self._claims_path(fingerprint)}/{number:06d}.json"

    # -- storage calls, with typed errors ----------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.root}{path[len(self._path) :]}"

    def _call(self, path: str, call: Callable[[], Any]) -> Any:
        """Run a storage call; a missing object stays `FileNotFoundError`, others get typed."""
        try:
            return call()
        except (FileExistsError, FileNotFoundError, OmniHumanError):
            raise
        except Exception as error:  # every fsspec backend raises its own kinds
            raise storage_failure(error, self._url(path)) from None

    def _read_json(self, path: str) -> bytes | None:
        # s3fs sizes a file (HEAD, and a listing when it is missing) before reading it in
        # parallel parts; a ledger file is small, so one GET answers both questions.
        single = {"max_concurrency": 1} if "s3" in self._protocols else {}
        try:
            return bytes(self._call(path, lambda: self._fs.cat_file(path, **single)))
        except FileNotFoundError:
            return None

    def _list(self, folder: str) -> list[str]:
        try:
            names = self._call(folder, lambda: self._fs.ls(folder, detail=False, refresh=True))
        except FileNotFoundError:
            return []
        return [str(name) for name in names]

    def _write(self, path: str, data: bytes, *, exclusive: bool = False) -> None:
        def put() -> None:
            if self._local:
                self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            if exclusive:
                with self._fs.open(path, "xb") as handle:
                    handle.write(data)
            else:
                self._fs.pipe_file(path, data)

        try:
            self._call(path, put)
        except FileNotFoundError as error:  # on a write: the bucket or folder is missing
            raise storage_failure(error, self._url(path)) from None

    @property
    def _protocols(self) -> tuple[str, ...]:
        protocol = self._fs.protocol
        return tuple(protocol) if isinstance(protocol, (tuple, list)) else (str(protocol),)

    @property
    def _local(self) -> bool:
        return "file" in self._protocols

    # -- records -----------------------------------------------------------------------------

    def read(self, fingerprint: str) -> LedgerRecord | None:
        """The record of `fingerprint`, None if there is none.

        Raises:
            LedgerRecordError: The file exists but is not a record (nothing may be paid).
            InputError / StorageError: The storage cannot be reached or read.
        """
        raw = self._read_json(self._record_path(fingerprint))
        if raw is None:
            return None
        return self._with_deliveries(self._parse(raw, self.record_url(fingerprint)))

    def _with_deliveries(self, record: LedgerRecord) -> LedgerRecord:
        deliveries = []
        for name in sorted(self._list(self._deliveries_path(record.fingerprint))):
            raw = self._read_json(name)
            if raw is None:
                continue
            try:
                delivery = LedgerDelivery.model_validate_json(raw)
            except (ValidationError, ValueError) as error:
                raise LedgerRecordError(self._url(name), str(error).splitlines()[0]) from None
            if delivery.generation_id == record.generation_id:  # not a superseded one's
                deliveries.append(delivery)
        if not deliveries:
            return record
        update: dict[str, Any] = {"deliveries": deliveries}
        if record.status in ("submitted", "completed"):
            update["status"] = "delivered"
            update["delivered_at"] = max(d.delivered_at for d in deliveries)
        return record.model_copy(update=update)

    def add_delivery(self, fingerprint: str, delivery: LedgerDelivery) -> None:
        """Record that the video of `fingerprint` was stored at `delivery.location`."""
        name = hashlib.sha256(delivery.location.encode()).hexdigest()[:32]
        path = f"{self._deliveries_path(fingerprint)}/{name}.json"
        self._write(path, delivery.model_dump_json().encode())

    @staticmethod
    def _parse(raw: bytes, location: str) -> LedgerRecord:
        try:
            return LedgerRecord.model_validate_json(raw)
        except (ValidationError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise LedgerRecordError(location, reason) from None

    def write(self, record: LedgerRecord) -> None:
        """Store `record` (replacing the fingerprint's current one)."""
        self._write(
            self._record_path(record.fingerprint), record.model_dump_json(indent=1).encode()
        )

    def supersede(self, fingerprint: str) -> None:
        """Keep the current record aside before `force_new` pays for the same inputs again."""
        raw = self._read_json(self._record_path(fingerprint))
        if raw is not None:
            aside = f"{self._path}/records/{fingerprint}.superseded-{time.time():.3f}.json"
            self._write(aside, raw)

    def records(self) -> list[LedgerRecord]:
        """Every record (superseded ones included), newest submission first.

        Raises:
            LedgerRecordError: A record cannot be parsed.
        """
        found = []
        for name in sorted(self._list(f"{self._path}/records")):
            if not name.endswith(".json"):
                continue
            raw = self._read_json(name)
            if raw is not None:
                found.append(self._with_deliveries(self._parse(raw, self._url(name))))
        return sorted(found, key=lambda r: r.submitted_at, reverse=True)

    def find(self, key: str) -> LedgerRecord | None:
        """The record whose fingerprint or generation id is `key` (or starts with it)."""
        if len(key) == 64 and all(c in "0123456789abcdef" for c in key):
            return self.read(key)
        for record in self.records():
            if record.generation_id == key or record.fingerprint.startswith(key):
                return record
        return None

    # -- claims ------------------------------------------------------------------------------

    def reserve(self, fingerprint: str, *, force_new: bool = False) -> Reservation:
        """Return the fingerprint's record, or claim the right to pay for it.

        A live claim of another worker is waited for, with backoff, until it turns into
        a record (returned) or goes stale (taken over); after `wait_seconds`,
        `ClaimWaitTimeoutError`. On a store without exclusive create, returns a
        reservation without a claim (the caller falls back to local locking).
        """
        started = time.monotonic()
        step = _FIRST_WAIT_SECONDS
        first_pass = True
        while True:
            if not force_new:
                record = self.read(fingerprint)
                if record is not None:
                    return Reservation(record=record)
            if first_pass and not force_new:
                # Usually nobody has claimed these inputs: try claim 1 before listing claims.
                first_pass = False
                claim = self._try_claim(fingerprint, 1)
                if claim is not None:
                    if not self.exclusive_create_works(fingerprint, claim):
                        return Reservation()
                    return Reservation(claim=claim)
            current = self._current_claim(fingerprint)
            now = time.time()
            if current is None or current.is_stale(now) or force_new:
                number = 1 if current is None else current.number + 1
                claim = self._try_claim(fingerprint, number)
                if claim is not None:
                    if not self.exclusive_create_works(fingerprint, claim):
                        return Reservation()
                    takeover = current is not None and current.state == "held" and not force_new
                    if takeover and current is not None:
                        logger.warning(
                            "Took over the claim of %s on fingerprint %s: it died without "
                            "recording an answer, so it may have paid too",
                            current.describe(),
                            fingerprint[:16],
                        )
                    return Reservation(claim=claim, suspected_duplicate=takeover)
                force_new = False  # someone else claimed n first; from now on, wait for it
                continue
            waited = time.monotonic() - started
            if waited >= self.wait_seconds:
                raise ClaimWaitTimeoutError(fingerprint, current.describe(), waited)
            if step == _FIRST_WAIT_SECONDS:
                logger.info(
                    "Waiting for %s, which is submitting the same inputs, to record its "
                    "generation (no second payment)",
                    current.describe(),
                )
            time.sleep(min(step, max(0.0, self.wait_seconds - waited)))
            step = min(step * 1.6, _MAX_WAIT_STEP_SECONDS)

    def _current_claim(self, fingerprint: str) -> Claim | None:
        names = self._list(self._claims_path(fingerprint))
        numbers = sorted(int(n.rsplit("/", 1)[-1][:-5]) for n in names if n.endswith(".json"))
        for number in reversed(numbers):
            raw = self._read_json(self._claim_path(fingerprint, number))
            if raw is None:
                continue
            try:
                return Claim.model_validate_json(raw)
            except ValidationError:
                # A claim being written right now, or a torn one: treat it as held and fresh,
                # so it is waited for, and replaced once its lease would have run out.
                return Claim(
                    number=number, holder="?", host="?", pid=0, claimed_at=time.time(),
                    renewed_at=time.time(), lease_seconds=self.lease_seconds,
                )  # fmt: skip
        return None

    def _try_claim(self, fingerprint: str, number: int) -> Claim | None:
        now = time.time()
        claim = Claim(
            number=number,
            holder=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            claimed_at=now,
            renewed_at=now,
            lease_seconds=self.lease_seconds,
        )
        try:
            self._write(
                self._claim_path(fingerprint, number), self._claim_bytes(claim), exclusive=True
            )
        except FileExistsError:
            return None
        return claim

    @staticmethod
    def _claim_bytes(claim: Claim) -> bytes:
        return claim.model_dump_json().encode()

    def exclusive_create_works(self, fingerprint: str, claim: Claim) -> bool:
        """Whether this store refuses a second create of the same object (probed once).

        The probe re-creates the claim just made, with the same contents (an empty body
        would not do: s3fs sends a zero-length file without `If-None-Match`). A store that
        accepts it would let two workers both believe they hold the claim.
        """
        with _probe_lock:
            known = _exclusive_support.get(self.root)
            if known is not None:
                return known
            works = False
            if not ATOMIC_CREATE_PROTOCOLS.isdisjoint(self._protocols):
                try:
                    path = self._claim_path(fingerprint, claim.number)
                    with self._fs.open(path, "xb") as handle:
                        handle.write(self._claim_bytes(claim))
                except FileExistsError:
                    works = True
                except (ValueError, NotImplementedError, TypeError, OSError):
                    works = False
            if not works:
                logger.warning(
                    "The storage %s does not support exclusive create, so workers that share "
                    "only this storage cannot tell each other they are paying; falling back to "
                    "the local lock (OMNIHUMAN_LOCK_PATH) and Prefect's cache",
                    self.root,
                )
            _exclusive_support[self.root] = works
            return works

    @contextmanager
    def holding(self, fingerprint: str, claim: Claim) -> Iterator[None]:
        """Renew `claim` while the caller pays; release it when the POST created nothing.

        The caller records every paid outcome (a generation, or an ambiguous submission)
        before leaving. A plain failure of the POST (refused, rate limited, rejected)
        created nothing and releases the claim, so another worker may pay at once.
        Anything else (an ambiguous answer, a failed record, an interrupt mid-POST)
        keeps it held until its lease runs out, and the next claim is then marked as a
        suspected duplicate.
        """
        stop = threading.Event()
        path = self._claim_path(fingerprint, claim.number)

        def renew() -> None:
            while not stop.wait(claim.lease_seconds / 3):
                claim.renewed_at = time.time()
                try:
                    self._write(path, self._claim_bytes(claim))
                except OmniHumanError as error:
                    logger.warning("Renewing the claim on %s failed: %s", fingerprint[:16], error)

        renewer = threading.Thread(target=renew, name="omnihuman-claim-renewal", daemon=True)
        renewer.start()
        try:
            yield
        except Exception as error:
            stop.set()
            renewer.join()
            if not isinstance(error, (AmbiguousSubmissionError, LedgerError)):
                claim.state = "released"
                with suppress(OmniHumanError):  # if this fails too, the lease runs out
                    self._write(path, self._claim_bytes(claim))
            raise
        finally:
            stop.set()
            renewer.join()

    def read_quietly(self, fingerprint: str) -> LedgerRecord | None:
        """`read`, but None (not an error) when the storage or the record is unusable."""
        try:
            return self.read(fingerprint)
        except OmniHumanError:
            return None


def ledger_for(storage: MediaStorage | None) -> GenerationLedger | None:
    """The ledger in `storage`, or None without storage (local runs keep today's records)."""
    return None if storage is None else GenerationLedger(storage)


def record_json(record: LedgerRecord) -> dict[str, Any]:
    """A record as plain JSON data (for `omnihuman ledger --json`)."""
    return record.model_dump(mode="json")
