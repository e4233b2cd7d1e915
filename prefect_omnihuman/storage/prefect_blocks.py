"""The storage blocks Prefect users already have, as a `MediaStorage`.

A prefect-aws `S3Bucket` (with its `AwsCredentials` or `MinIOCredentials`), Prefect's
`RemoteFileSystem` and `LocalFileSystem` each name a folder and how to reach it. Turned
into a `MediaStorage` (a base URL plus fsspec options), they stage, presign and deliver
like any other storage, with the block's own credentials: s3fs signs URLs with the keys
it was given.

prefect-aws stays optional: it is imported only to load a saved `s3-bucket/...` block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect.types import SecretDict

from prefect_omnihuman.errors import InputError
from prefect_omnihuman.storage.media_storage import MediaStorage

#: Block type slugs that `load_storage_block` accepts before the `/` of `slug/name`.
STORAGE_BLOCK_SLUGS = (
    "omnihuman-media-storage",
    "s3-bucket",
    "remote-file-system",
    "local-file-system",
)
AWS_EXTRA_FIX = "pip install 'prefect-omnihuman[aws]' (it brings prefect-aws)"


def as_media_storage(block: Block) -> MediaStorage:
    """The `MediaStorage` that stores where `block` does, with the block's credentials.

    Accepts a `MediaStorage` (returned as it is), a prefect-aws `S3Bucket`, a
    `RemoteFileSystem` or a `LocalFileSystem`; any other block is an `InputError`.

    Example:
        ```python
        from prefect_aws import S3Bucket

        storage = as_media_storage(S3Bucket.load("BLOCK_NAME"))
        storage.url_for("videos/intro.mp4")  # s3://bucket/bucket_folder/videos/intro.mp4
        ```
    """
    if isinstance(block, MediaStorage):
        return block
    if isinstance(block, LocalFileSystem):
        local = Path(block.basepath or ".").expanduser().resolve()
        return MediaStorage(base_url=str(local))
    if isinstance(block, RemoteFileSystem):
        return MediaStorage(
            base_url=block.basepath, storage_options=SecretDict(dict(block.settings))
        )
    # Recognised by slug, so that prefect-aws is never imported here.
    if block.get_block_type_slug() == "s3-bucket":
        bucket = str(getattr(block, "bucket_name"))  # noqa: B009
        folder = str(getattr(block, "bucket_folder", "") or "").strip("/")
        options = s3fs_options(getattr(block, "credentials"))  # noqa: B009
        return MediaStorage(
            base_url=f"s3://{bucket}/{folder}" if folder else f"s3://{bucket}",
            storage_options=SecretDict(options),
        )
    raise InputError(
        f"a {type(block).__name__} block cannot stage or store media",
        fix="pass a MediaStorage, a prefect-aws S3Bucket, a RemoteFileSystem or a "
        "LocalFileSystem block",
    )


def s3fs_options(credentials: Block) -> dict[str, Any]:
    """The s3fs options that reach S3 as a prefect-aws credentials block does.

    Keys, session token, profile, region, endpoint and the other client parameters
    are copied; unset ones are left to boto's usual lookup, as prefect-aws does.
    """
    slug = credentials.get_block_type_slug()
    options: dict[str, Any] = {}
    if slug == "minio-credentials":
        options["key"] = getattr(credentials, "minio_root_user")  # noqa: B009
        options["secret"] = _secret(getattr(credentials, "minio_root_password"))  # noqa: B009
    elif slug == "aws-credentials":
        if getattr(credentials, "assume_role_arn", None):
            # s3fs cannot assume a role itself: take the role's temporary keys now.
            session = credentials.get_boto3_session()  # type: ignore[attr-defined]
            frozen = session.get_credentials().get_frozen_credentials()
            options.update(key=frozen.access_key, secret=frozen.secret_key, token=frozen.token)
        else:
            options["key"] = getattr(credentials, "aws_access_key_id", None)
            options["secret"] = _secret(getattr(credentials, "aws_secret_access_key", None))
            options["token"] = getattr(credentials, "aws_session_token", None)
            options["profile"] = getattr(credentials, "profile_name", None)
    else:
        raise InputError(
            f"an S3Bucket with {type(credentials).__name__} credentials is not supported",
            fix="give the S3Bucket an AwsCredentials or MinIOCredentials block",
        )
    client_kwargs: dict[str, Any] = {"region_name": getattr(credentials, "region_name", None)}
    parameters = getattr(credentials, "aws_client_parameters", None)
    if parameters is not None:
        client_kwargs["endpoint_url"] = parameters.endpoint_url
        client_kwargs["api_version"] = parameters.api_version
        if parameters.verify_cert_path:
            client_kwargs["verify"] = str(parameters.verify_cert_path)
        elif parameters.verify is not True and parameters.verify is not None:
            client_kwargs["verify"] = (
                parameters.verify if isinstance(parameters.verify, bool) else str(parameters.verify)
            )
        if not parameters.use_ssl:
            options["use_ssl"] = False
        config = dict(parameters.config or {})
        if config.get("signature_version") == "unsigned":
            config.pop("signature_version")
            options["anon"] = True
        if config:
            options["config_kwargs"] = config
    options["client_kwargs"] = {k: v for k, v in client_kwargs.items() if v is not None}
    return {k: v for k, v in options.items() if v is not None and v != {}}


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.get_secret_value()) if hasattr(value, "get_secret_value") else str(value)


def load_storage_block(name: str) -> MediaStorage:
    """A saved storage block as a `MediaStorage`.

    A bare name loads a `MediaStorage` block; Prefect's `block-type-slug/name` form loads
    the other kinds `as_media_storage` accepts (e.g. `s3-bucket/team-media`).

    Example:
        ```python
        storage = load_storage_block("s3-bucket/team-media")
        ```
    """
    if "/" not in name:
        loaded: MediaStorage = MediaStorage.load(name)  # type: ignore[assignment]
        return loaded
    slug, _, document = name.partition("/")
    block_class: type[Block]
    if slug == "omnihuman-media-storage":
        block_class = MediaStorage
    elif slug == "local-file-system":
        block_class = LocalFileSystem
    elif slug == "remote-file-system":
        block_class = RemoteFileSystem
    elif slug == "s3-bucket":
        try:
            from prefect_aws import S3Bucket
        except ImportError:
            raise InputError(
                f"loading the S3Bucket block {document!r} needs prefect-aws, "
                "which is not installed",
                fix=AWS_EXTRA_FIX,
            ) from None
        block_class = S3Bucket
    else:
        raise InputError(
            f"blocks of type {slug!r} cannot stage or store media",
            source=name,
            fix="name a block of one of these types: "
            + ", ".join(STORAGE_BLOCK_SLUGS)
            + " (or give a bare MediaStorage block name)",
        )
    block: Block = block_class.load(document)  # type: ignore[assignment]
    return as_media_storage(block)
