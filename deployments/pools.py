"""Braid's ECS work pools: one base job template, and each modality's job variables as data.

The template is prefect-aws's own ECS default (``ECSWorker.get_default_base_job_template()``,
what ``prefect work-pool get-default-base-job-template --type ecs`` prints) with Braid's
defaults filled in and three variables added that the default cannot express: GPUs
(``resource_requirements``) and the lake's EFS volume (``volumes``, ``mount_points``).
Deriving it rather than hand-writing it keeps every option prefect-aws offers; the
committed JSON is regenerated after a prefect-aws upgrade, and a test fails while the two
differ::

    python -m deployments.pools write   # deployments/pools/ecs-base-job-template.json
    python -m deployments.pools check   # exit 1 if the file is out of date

The same template serves ``ecs`` pools (a worker submits the task) and ``ecs:push`` pools
(Prefect Cloud submits it): both render it with prefect-aws's job configuration.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.common import MODALITIES

TEMPLATE_PATH = Path(__file__).parent / "pools" / "ecs-base-job-template.json"

# PLACEHOLDER: the registry and repository the build step pushes to (prefect-ecs*.yaml).
IMAGE_REPOSITORY = "ghcr.io/braid-data/braid"
CPU_IMAGE = f"{IMAGE_REPOSITORY}:latest"  # deployments/docker/Dockerfile
GPU_IMAGE = f"{IMAGE_REPOSITORY}:latest-gpu"  # deployments/docker/Dockerfile.gpu

# Fargate has no GPUs: GPU tasks run on EC2 GPU instances (ECS GPU-optimized AMI) that an
# ECS capacity provider of this name, attached to the pool's cluster, supplies.
GPU_CAPACITY_PROVIDER = "braid-gpu"

# The lake lives on EFS, mounted here in every task (S3 lakes are not supported yet).
LAKE_MOUNT = "/mnt/lake"
LAKE_VOLUME = "braid-lake"

# Set for every task of a pool; a deployment's `env` adds to these rather than replacing
# them. HF_HUB_OFFLINE is deliberately not set: cloud tasks fetch models from the Hub.
POOL_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "BRAID_LAKE": LAKE_MOUNT,
}

# Defaults of existing prefect-aws variables. Execution and task roles, cluster, VPC and
# AWS credentials stay variables without defaults: they are per account (set them on the
# pool, or let `prefect work-pool create --provision-infra` fill them in).
BRAID_DEFAULTS: dict[str, Any] = {
    "image": CPU_IMAGE,
    "cpu": 1024,
    "memory": 4096,
    "env": POOL_ENV,
}

_OBJECT_LIST = {"type": "array", "items": {"type": "object"}, "default": []}

# Variables prefect-aws's template lacks, and where each lands in the job configuration.
# Empty lists are dropped by the worker before it registers the task definition.
BRAID_VARIABLES: dict[str, dict[str, Any]] = {
    "resource_requirements": {
        "title": "Resource Requirements",
        "description": (
            "Braid: resourceRequirements of the Prefect container, e.g. "
            '[{"type": "GPU", "value": "1"}]. GPUs need the EC2 launch type (or a '
            "capacity provider of GPU instances); Fargate has none."
        ),
        **_OBJECT_LIST,
    },
    "volumes": {
        "title": "Volumes",
        "description": (
            "Braid: task definition volumes, e.g. the lake on EFS: "
            '[{"name": "braid-lake", "efsVolumeConfiguration": {"fileSystemId": "fs-…", '
            '"transitEncryption": "ENABLED"}}].'
        ),
        **_OBJECT_LIST,
    },
    "mount_points": {
        "title": "Mount Points",
        "description": (
            "Braid: mountPoints of the Prefect container, e.g. "
            '[{"sourceVolume": "braid-lake", "containerPath": "/mnt/lake"}].'
        ),
        **_OBJECT_LIST,
    },
}

_IMAGE_NOTE = (
    f"Braid: the project image (deployments/docker/). The default {CPU_IMAGE} is a "
    "PLACEHOLDER for your registry; deployments set the image they built. "
)


def _ecs_threads(cpu: int) -> str:
    """Torch threads per Dask worker for a task of ``cpu`` units (1024 = 1 vCPU).

    flows.pipeline.dask_runner starts min(4, cores) workers, so threads times workers stays
    within the task's vCPUs instead of oversubscribing them.
    """
    vcpus = max(1, cpu // 1024)
    return str(max(1, vcpus // min(4, vcpus)))


def _gpu(cpu: int, memory: int) -> dict[str, Any]:
    """Job variables of a task with one GPU (memory fits the instance: g5.xlarge, g5.2xlarge)."""
    return {
        "image": GPU_IMAGE,
        "cpu": cpu,
        "memory": memory,
        "launch_type": "EC2",
        "capacity_provider_strategy": [
            {"capacityProvider": GPU_CAPACITY_PROVIDER, "weight": 1, "base": 0}
        ],
        "resource_requirements": [{"type": "GPU", "value": "1"}],
        "env": {"BRAID_TORCH_THREADS": _ecs_threads(cpu)},
    }


def _fargate(cpu: int, memory: int) -> dict[str, Any]:
    """Job variables of a Fargate task (cpu and memory must be a Fargate combination)."""
    return {
        "image": CPU_IMAGE,
        "cpu": cpu,
        "memory": memory,
        "env": {"BRAID_TORCH_THREADS": _ecs_threads(cpu)},
    }


# One pool per modality, sized for its decode and model: images and video embed on a GPU,
# audio decodes and resamples on CPU, text and sensor logs are light.
MODALITY_JOB_VARIABLES: dict[str, dict[str, Any]] = {
    "image": _gpu(cpu=4096, memory=14336),
    "text": _fargate(cpu=2048, memory=8192),
    "audio": _fargate(cpu=4096, memory=16384),
    "video": _gpu(cpu=8192, memory=30720),
    "timeseries": _fargate(cpu=1024, memory=4096),
}

# The ingest (and backfill) run lists, hashes and fans out: I/O, no models.
INGEST_JOB_VARIABLES: dict[str, Any] = _fargate(cpu=1024, memory=4096)

ECS_PLATFORMS = ("ecs", "ecs:push")
PLATFORMS = (*ECS_PLATFORMS, "process")


def job_variables_for(modality: str, platform: str = "ecs:push") -> dict[str, Any]:
    """The job variables of ``modality``'s deployment on a pool of type ``platform``.

    ``ecs`` and ``ecs:push`` pools share the template, so they share the variables; a
    ``process`` pool runs on the worker's own machine, sized by that machine: none.
    """
    if modality not in MODALITY_JOB_VARIABLES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    if platform in ECS_PLATFORMS:
        return copy.deepcopy(MODALITY_JOB_VARIABLES[modality])
    if platform == "process":
        return {}
    raise ValueError(
        f"no job variables for {platform!r} pools; expected one of {PLATFORMS} "
        "(cloud-run:push and modal:push templates name cpu, memory and GPUs differently)"
    )


def efs_lake_job_variables(
    file_system_id: str, access_point_id: str | None = None
) -> dict[str, Any]:
    """Job variables that mount the lake's EFS file system at LAKE_MOUNT.

    With an access point (recommended: POSIX user 10001, the image's user, so the lake is
    writable), EFS IAM authorization is on and the task role needs
    elasticfilesystem:ClientMount and ClientWrite.
    """
    efs: dict[str, Any] = {"fileSystemId": file_system_id, "transitEncryption": "ENABLED"}
    if access_point_id:
        efs["authorizationConfig"] = {"accessPointId": access_point_id, "iam": "ENABLED"}
    return {
        "volumes": [{"name": LAKE_VOLUME, "efsVolumeConfiguration": efs}],
        "mount_points": [
            {"sourceVolume": LAKE_VOLUME, "containerPath": LAKE_MOUNT, "readOnly": False}
        ],
    }


def default_ecs_template() -> dict[str, Any]:
    """prefect-aws's default ECS base job template, as the installed version defines it."""
    from prefect_aws.workers.ecs_worker import ECSWorker

    return copy.deepcopy(ECSWorker.get_default_base_job_template())


def derive_ecs_template(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """prefect-aws's ECS template with Braid's variables and defaults (``overrides`` win).

    ``overrides`` maps variable names to new defaults, e.g. ``{"cluster": "braid"}``.
    """
    template = default_ecs_template()
    properties: dict[str, Any] = template["variables"]["properties"]
    properties.update(copy.deepcopy(BRAID_VARIABLES))
    properties["image"]["description"] = _IMAGE_NOTE + properties["image"]["description"]

    job = template["job_configuration"]
    task_definition = job["task_definition"]
    task_definition["volumes"] = "{{ volumes }}"
    container = task_definition["containerDefinitions"][0]
    container["resourceRequirements"] = "{{ resource_requirements }}"
    container["mountPoints"] = "{{ mount_points }}"

    defaults = {**BRAID_DEFAULTS, **(overrides or {})}
    unknown = sorted(set(defaults) - set(properties))
    if unknown:
        raise ValueError(f"not variables of the ECS template: {unknown}")
    for name, value in defaults.items():
        properties[name]["default"] = copy.deepcopy(value)
    return template


def render_template(template: Mapping[str, Any]) -> str:
    """The template as committed: stable, diff-friendly JSON."""
    return json.dumps(template, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m deployments.pools write|check|show`."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.pools",
        description="Braid's ECS base job template, derived from the installed prefect-aws.",
    )
    parser.add_argument(
        "command",
        choices=["write", "check", "show"],
        help="write the JSON file, check it is up to date, or print the template",
    )
    parser.add_argument("--path", type=Path, default=TEMPLATE_PATH)
    args = parser.parse_args(argv)

    text = render_template(derive_ecs_template())
    if args.command == "show":
        sys.stdout.write(text)
        return 0
    if args.command == "check":
        current = args.path.read_text() if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is out of date: python -m deployments.pools write", file=sys.stderr)
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
