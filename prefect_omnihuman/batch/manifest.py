"""Batch manifests: one row per video, as CSV or JSONL, at any fsspec URL.

Columns (CSV header or JSON keys):

| column | meaning |
|---|---|
| `image` | the portrait (required) |
| `audio` | the voice track; or |
| `text` | what the avatar says (synthesised first; exactly one of `audio`/`text`) |
| `out` | where the MP4 goes (path or fsspec URL; the storage's `videos/` when empty) |
| `voice`, `tts_model` | text rows only: the voice and the text-to-speech model |
| `model` | the video model (default `bytedance/omnihuman/v1.5`) |
| anything else | extra model parameters, sent to the API unchanged |

Relative paths are relative to the manifest's own folder, local or remote. In CSV,
extra parameter cells holding JSON (`42`, `true`, `{"a": 1}`) are decoded. Rows
that cannot run become `RowProblem`s (with a typed error name and a readable
reason); the other rows are unaffected.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, Field

from prefect_omnihuman.api.models import DEFAULT_MODEL
from prefect_omnihuman.errors import ManifestError, OmniHumanError
from prefect_omnihuman.storage.media_storage import display_name, is_local, local_path, read_source

KNOWN_COLUMNS = ("image", "audio", "text", "out", "voice", "tts_model", "model")
PATH_COLUMNS = ("image", "audio", "out")
#: Request fields the batch fills in itself; a column may not override them.
RESERVED_PARAMS = frozenset({"image_url", "audio_url", "model_params"})
_JSONL_FIX = 'write one JSON object per line, like {"image": "ada.png", "audio": "ada.wav"}'


class ManifestRow(BaseModel):
    """One video to make.

    Example:
        ```python
        row = ManifestRow(row=1, image="s3://b/ada.png", audio="s3://b/ada.wav", out="s3://b/ada.mp4")
        ```
    """

    row: int = Field(description="1-based position among the manifest's data rows.")
    image: str
    audio: str | None = None
    text: str | None = None
    out: str | None = None
    voice: str | None = None
    tts_model: str | None = None
    model: str = DEFAULT_MODEL
    model_params: dict[str, Any] = Field(default_factory=dict)

    @property
    def narrated(self) -> bool:
        """Whether the voice is synthesised from `text`."""
        return self.text is not None


class RowProblem(BaseModel):
    """A row that cannot run, and why."""

    row: int
    error_type: str = Field(description="The exception class, e.g. ManifestError.")
    message: str

    @classmethod
    def of(cls, row: int, error: BaseException) -> RowProblem:
        """The problem of `row` described by `error`."""
        text = " ".join(str(error).split()) or type(error).__name__
        return cls(row=row, error_type=type(error).__name__, message=text)


class Manifest(BaseModel):
    """A parsed manifest: the rows that can run and the problems of those that cannot."""

    source: str = Field(description="Where it was read from (URL without query).")
    format: Literal["csv", "jsonl"]
    rows: list[ManifestRow] = Field(default_factory=list)
    problems: list[RowProblem] = Field(default_factory=list)

    @property
    def size(self) -> int:
        """All data rows, good and bad."""
        return len(self.rows) + len(self.problems)


def read_manifest(url: str, *, options: dict[str, Any] | None = None) -> Manifest:
    """Read and parse the manifest at a local path or fsspec URL.

    Raises:
        ManifestError: The manifest itself is unreadable or has no usable header.

    Example:
        ```python
        manifest = read_manifest("s3://media/batches/monday.csv")
        print(len(manifest.rows), [p.message for p in manifest.problems])
        ```
    """
    try:
        data = read_source(url, options=options)
    except OmniHumanError as error:
        raise ManifestError(f"cannot read the manifest: {error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(
            "the manifest is not UTF-8 text", source=display_name(url), fix="save it as UTF-8"
        ) from None
    return parse_manifest(text, source=url)


def parse_manifest(text: str, *, source: str, format: str | None = None) -> Manifest:
    """Parse manifest text; `source` is its location (relative paths resolve against it).

    `format` is "csv" or "jsonl"; by default it follows the file extension, then the
    content (a first character `{` means JSONL).
    """
    kind = format or _guess_format(source, text)
    if kind not in ("csv", "jsonl"):
        raise ManifestError(f"unknown manifest format {kind!r}", fix="use csv or jsonl")
    records = _jsonl_records(text) if kind == "jsonl" else _csv_records(text, source)
    manifest = Manifest(source=display_name(source), format=cast(Any, kind))
    seen_outs: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        try:
            if isinstance(record, Exception):
                raise record
            row = _row(number, record, source)
            if row.out is not None:
                if row.out in seen_outs:
                    raise ManifestError(
                        f"out {row.out} is also row {seen_outs[row.out]}'s destination",
                        row=number,
                        fix="give every row its own out",
                    )
                seen_outs[row.out] = number
            manifest.rows.append(row)
        except ManifestError as error:
            manifest.problems.append(RowProblem.of(number, error))
    if manifest.size == 0:
        raise ManifestError("the manifest has no rows", source=manifest.source)
    return manifest


def _guess_format(source: str, text: str) -> str:
    suffix = posixpath.splitext(source.split("?", 1)[0])[1].lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _csv_records(text: str, source: str) -> list[dict[str, Any] | Exception]:
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or [] if name]
    if "image" not in header or not ({"audio", "text"} & set(header)):
        raise ManifestError(
            f"the CSV header is {header or 'missing'}",
            source=display_name(source),
            fix="start the file with a header naming image, audio (or text) and out",
        )
    records: list[dict[str, Any] | Exception] = []
    for raw in reader:
        if not any((value or "").strip() for value in raw.values() if isinstance(value, str)):
            continue  # blank line
        if None in raw:
            records.append(
                ManifestError(
                    "more cells than header columns",
                    fix="quote cells that hold commas, or name the extra column in the header",
                )
            )
            continue
        records.append(
            {
                name.strip(): _csv_value(name.strip(), value)
                for name, value in raw.items()
                if name and value is not None and value.strip() != ""
            }
        )
    return records


def _csv_value(column: str, cell: str) -> Any:
    value = cell.strip()
    if column in KNOWN_COLUMNS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _jsonl_records(text: str) -> list[dict[str, Any] | Exception]:
    records: list[dict[str, Any] | Exception] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            records.append(ManifestError(f"not valid JSON ({error.args[0]})", fix=_JSONL_FIX))
            continue
        if not isinstance(value, dict):
            records.append(ManifestError("a JSONL row must be a JSON object", fix=_JSONL_FIX))
            continue
        records.append({key: item for key, item in value.items() if item not in (None, "")})
    return records


def _row(number: int, record: dict[str, Any], source: str) -> ManifestRow:
    def text_of(column: str) -> str | None:
        value = record.get(column)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ManifestError(
                f"{column} must be text, not {value!r}",
                row=number,
                fix=f'write {column} as a quoted string, e.g. "{column}": "..."',
            )
        return value.strip() or None

    image, audio, text = text_of("image"), text_of("audio"), text_of("text")
    if image is None:
        raise ManifestError("no image", row=number, fix="fill in the image column")
    if (audio is None) == (text is None):
        raise ManifestError(
            "needs exactly one of audio and text",
            row=number,
            fix="give a voice track in audio, or what to say in text",
        )
    nested = record.get("model_params") or {}
    if not isinstance(nested, dict):
        raise ManifestError(
            "model_params must be a JSON object", row=number, fix='write it like {"seed": 42}'
        )
    params = dict(nested)
    params.update({key: value for key, value in record.items() if key not in KNOWN_COLUMNS})
    params.pop("model_params", None)
    reserved = sorted(RESERVED_PARAMS & set(params))
    if reserved:
        raise ManifestError(
            f"column {reserved[0]} cannot be set in a manifest",
            row=number,
            fix="use the image and audio columns",
        )
    out = text_of("out")
    return ManifestRow(
        row=number,
        image=resolve(image, source),
        audio=resolve(audio, source) if audio else None,
        text=text,
        out=resolve(out, source) if out else None,
        voice=text_of("voice"),
        tts_model=text_of("tts_model"),
        model=text_of("model") or DEFAULT_MODEL,
        model_params=params,
    )


def resolve(path: str, manifest: str) -> str:
    """`path` as written in `manifest`: URLs and absolute paths as they are, relative
    paths joined to the manifest's folder (a local folder or a URL prefix).

    Example:
        ```python
        resolve("faces/ada.png", "s3://media/batch.csv")  # "s3://media/faces/ada.png"
        ```
    """
    if "://" in path or Path(path).expanduser().is_absolute():
        return str(Path(path).expanduser()) if "://" not in path else path
    if is_local(manifest):
        return str(local_path(manifest).parent / path)
    root, _, rest = manifest.split("?", 1)[0].partition("://")
    folder = posixpath.dirname(rest)
    joined = posixpath.normpath(posixpath.join(folder, path))
    return f"{root}://{joined}"
