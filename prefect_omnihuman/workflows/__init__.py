"""The Prefect layer: blocks, tasks and flows that orchestrate the client and media work.

- `credentials`: the `AimlApiCredentials` block.
- `block_loading`: turn block names (or objects) given to flows and the CLI into blocks.
- `generation_tasks`: validate, stage, submit, poll and download tasks.
- `speech_and_prep_tasks`: text-to-speech and image/audio preparation tasks.
- `generation_slots`: the concurrency slot a generation holds while it is on the API.
- `retry_conditions`: which task failures Prefect retries.
- `events`: the Prefect events a generation emits.
- `video_artifacts`: the video's picture and link in the UI, and its lineage as a Prefect asset.
- `interruption`: ending tasks' waits when their flow run is interrupted (SIGTERM, Ctrl-C).
- `video_flows`: `omnihuman_video` and `omnihuman_narrated_video`.
- `long_narration`: narrations longer than the model's limit, as parts generated concurrently.

May import: `api`, `media`, `storage`, `prefect_omnihuman.errors` and `.results`. Never `batch`.
"""
