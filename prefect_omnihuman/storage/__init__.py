"""Where media and the records of paid generations live.

- `media_storage`: the `MediaStorage` block (fsspec: local folders, `s3://`, `gs://`, ...):
  reading inputs, staging, atomic delivery and download spools.
- `locks`: the file lock manager that keeps two runs from submitting the same inputs at once.
- `prefect_blocks`: Prefect's own storage blocks (prefect-aws `S3Bucket`, `RemoteFileSystem`,
  `LocalFileSystem`) as a `MediaStorage`; prefect-aws is imported only when needed.

May import: `prefect_omnihuman.errors`, `api.models`, and Prefect's block and locking APIs.
Never `media`, `workflows` or `batch`.
"""
