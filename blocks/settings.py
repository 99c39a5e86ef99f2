"""Pipeline settings as a Prefect block: saved once, loaded by name inside flows.

A run's parameters override the block field by field, so a deployment can keep its
settings in the block while a one-off `braid run --image-model ...` changes just one.
"""

from __future__ import annotations

import os
from typing import Any, cast

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field

from blocks import defaults

STANDARD_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)


class BraidSettings(Block):
    """Where Braid lands data, which models embed it, and the limits that keep a run safe.

    Model fields take a Hugging Face model id or a local directory; both load through
    `from_pretrained`. Leave the image or audio model empty to use the documented
    handcrafted embedding instead.

    Example:
        Save settings once, then run with them:
        ```python
        from blocks.settings import BraidSettings

        BraidSettings(lake="s3://my-bucket/lake", image_model="openai/clip-vit-base-patch32").save("prod")
        ```
        ```bash
        braid run ./landing --settings prod
        ```
    """

    _block_type_name = "Braid Settings"
    _block_type_slug = "braid-settings"
    _description = "Lake location, encoder models, batch sizes and safety limits for Braid."

    lake: str = Field(
        default_factory=lambda: os.environ.get("BRAID_LAKE", "lake"),
        description="Folder (or URL) where tables are landed (default: $BRAID_LAKE, else ./lake).",
    )
    text_model: str = Field(
        default=defaults.DEFAULT_TEXT_MODEL,
        description="Text encoder: Hugging Face id or local path (default: all-MiniLM-L6-v2, bundled).",
    )
    image_model: str | None = Field(
        default=None,
        description="Image encoder: Hugging Face id or local path; empty for the handcrafted vector.",
    )
    audio_model: str | None = Field(
        default=None,
        description="Audio encoder: Hugging Face id or local path; empty for the handcrafted vector.",
    )
    batch_size: int = Field(
        default=128,
        ge=1,
        description=(
            "Objects per batch: one Prefect task run (or child run) and one model call per "
            "batch. A Prefect task on Dask costs about 0.1 s of the flow's CPU to submit, so "
            "a batch should hold seconds of work."
        ),
    )
    child_batch_size: int = Field(
        default=1024,
        ge=1,
        description=(
            "Objects per child run with fan_out 'deployments'. A child run is a process "
            "(on ECS a task) that imports torch and loads its models before any work, "
            "seconds of fixed cost, so it takes many batches and extracts them batch_size "
            "at a time; a modality with more objects gets several child runs."
        ),
    )
    dask_address: str | None = Field(
        default=None,
        description="Address of an existing Dask scheduler (tcp://...); empty starts a local cluster.",
    )
    dask_workers: int | None = Field(
        default=None,
        ge=1,
        description="Workers of the local Dask cluster; empty sizes it to the machine.",
    )
    aws_credentials_block: str | None = Field(
        default=None,
        description=(
            "Name of a prefect-aws AwsCredentials block for s3:// sources (its endpoint URL "
            "serves MinIO and other S3-compatible stores); empty uses the default AWS chain "
            "(AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, instance role). Same as "
            "setting BRAID_AWS_CREDENTIALS_BLOCK."
        ),
    )
    max_object_bytes: int = Field(
        default=defaults.MAX_OBJECT_BYTES,
        ge=1,
        description="Objects larger than this are quarantined.",
    )
    max_image_pixels: int = Field(
        default=defaults.MAX_IMAGE_PIXELS,
        ge=1,
        description="Images with more pixels are quarantined.",
    )
    max_duration_s: float = Field(
        default=defaults.MAX_DURATION_S,
        gt=0,
        description="Audio and video longer than this are quarantined.",
    )
    frames_per_second: float = Field(
        default=defaults.FRAMES_PER_SECOND, gt=0, description="Video frames sampled per second."
    )
    max_video_frames: int = Field(
        default=defaults.MAX_VIDEO_FRAMES, ge=1, description="At most this many frames per video."
    )
    max_video_pixels: int = Field(
        default=defaults.MAX_VIDEO_PIXELS,
        ge=1,
        description="Videos whose header promises more than width x height x frames are "
        "quarantined before decoding.",
    )
    max_csv_columns: int = Field(
        default=defaults.MAX_CSV_COLUMNS,
        ge=2,
        description="Sensor logs with more columns are quarantined before parsing.",
    )
    max_csv_rows: int = Field(
        default=defaults.MAX_CSV_ROWS,
        ge=2,
        description="Sensor logs with more rows are quarantined before parsing.",
    )
    decode_seconds: float = Field(
        default=defaults.DECODE_SECONDS,
        gt=0,
        description="A decoder still running after this many seconds is stopped and its "
        "object quarantined.",
    )
    decode_memory_mb: float = Field(
        default=defaults.DECODE_MEMORY_MB,
        gt=0,
        description="A decoder that grows the process by more than this many MB is stopped "
        "and its object quarantined.",
    )
    inline_max_objects: int = Field(
        default_factory=lambda: int(os.environ.get("BRAID_INLINE_MAX_OBJECTS", "8")),
        ge=0,
        description=(
            "A run with at most this many new objects extracts them in its own process, "
            "without starting a Dask cluster or child runs (which cost seconds, more than a "
            "few objects' work): a single upload lands sooner. 0 never does "
            "(default: $BRAID_INLINE_MAX_OBJECTS, else 8)."
        ),
    )
    fan_out: str = Field(
        default="local",
        pattern="^(local|deployments)$",
        description=(
            "How batches run: 'local' (in this flow run, on its Dask cluster) or 'deployments' "
            "(a process-<modality> child run per batch, each on its modality's work pool)."
        ),
    )
    lock_timeout_s: float | None = Field(
        default=None,
        ge=0,
        description=(
            "How long a run waits for another run writing the same lake (one writer at a "
            "time) before it fails; empty waits as long as it takes, 0 fails at once."
        ),
    )
    keep_models: bool = Field(
        default=False,
        description=(
            "Keep the encoders loaded after a run's extraction, for a process that runs the "
            "flow again (a notebook, a script looping over sources). By default a run frees "
            "them before fusion, which then needs none: about 90 MB for MiniLM."
        ),
    )
    quality_policy: str = Field(
        default=defaults.DEFAULT_QUALITY_POLICY,
        pattern=f"^({'|'.join(defaults.QUALITY_POLICIES)})$",
        description="What a failed validation does: quarantine failing rows, fail the table, or warn.",
    )
    quality_policies: dict[str, str] = Field(
        default_factory=dict,
        description="Per-table policy overrides, e.g. {'fused': 'fail'}.",
    )
    sample_rates: list[int] = Field(
        default_factory=lambda: list(STANDARD_SAMPLE_RATES),
        description="Audio sample rates a valid clip may have.",
    )
    max_channels: int = Field(
        default=8, ge=1, description="Most audio channels a valid clip may have."
    )
    min_fps: float = Field(
        default=1.0, gt=0, description="Lowest frame rate a valid video may have."
    )
    max_fps: float = Field(
        default=240.0, gt=0, description="Highest frame rate a valid video may have."
    )
    norm_tolerance: float = Field(
        default=1e-3, gt=0, description="How far an embedding's L2 norm may be from 1."
    )

    def policy_for(self, table: str) -> str:
        """The validation policy of one table."""
        return self.quality_policies.get(table, self.quality_policy)


class RunOptions(BaseModel):
    """What one run changes from its settings block: every field left empty keeps the block's.

    The one set of options that `braid run`, `braid redrive` and both flows take.
    Values are checked like the block's own fields when the run resolves its settings.

    Example:
        ```python
        from blocks.settings import RunOptions
        from flows.pipeline import pipeline

        pipeline(source="landing", options=RunOptions(image_model="./my-vit", batch_size=64))
        ```
    """

    model_config = ConfigDict(extra="forbid")

    text_model: str | None = Field(None, description="Text encoder: Hugging Face id or local path.")
    image_model: str | None = Field(
        None, description="Image encoder: Hugging Face id or local path."
    )
    audio_model: str | None = Field(
        None, description="Audio encoder: Hugging Face id or local path."
    )
    batch_size: int | None = Field(None, description="Objects per batch.")
    child_batch_size: int | None = Field(
        None, description="Objects per child run with fan_out 'deployments'."
    )
    dask_address: str | None = Field(None, description="Address of an existing Dask scheduler.")
    dask_workers: int | None = Field(None, description="Workers of the local Dask cluster.")
    fan_out: str | None = Field(None, description="'local' or 'deployments'.")
    inline_max_objects: int | None = Field(
        None, description="At most this many new objects extract in the flow's own process."
    )
    keep_models: bool | None = Field(
        default=None, description="Keep the encoders loaded after extraction, for another run."
    )
    quality_policy: str | None = Field(None, description="quarantine, fail or warn, every table.")
    quality_policies: dict[str, str] | None = Field(None, description="Per-table policies.")
    lock_timeout_s: float | None = Field(
        None, description="Seconds to wait for another run writing the same lake."
    )


def resolve_settings(
    block_name: str | None = None, options: RunOptions | None = None, **overrides: Any
) -> BraidSettings:
    """Load the named block (or defaults) and apply the options and overrides that are not None.

    Overrides are validated like the block's own fields, so a bad value fails here,
    before any work starts.
    """
    base = cast(BraidSettings, BraidSettings.load(block_name)) if block_name else BraidSettings()
    given = {**(options.model_dump() if options else {}), **overrides}
    changes = {key: value for key, value in given.items() if value is not None}
    if not changes:
        return base
    fields = base.model_dump(exclude={"block_type_slug"})
    return BraidSettings.model_validate({**fields, **changes})
