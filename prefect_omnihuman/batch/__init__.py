"""The batch machinery: many videos from one manifest, within a budget and concurrency limits.

- `manifest`: read and check CSV/JSONL manifests.
- `budget`: estimate a batch's cost and stop it before it exceeds the budget.
- `row_order`: start the longest generations first.
- `batch_flow`: the `omnihuman_batch` flow and its result.
- `progress_view`: the CLI's live table of a batch's rows.

May import: every lower part (`api`, `media`, `storage`, `workflows`).
"""
