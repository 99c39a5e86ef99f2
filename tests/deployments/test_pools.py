"""Braid's cloud side, checked offline: the ECS base job template against the installed
prefect-aws, each modality's job variables rendered into the ECS task prefect-aws would
start, the two ECS prefect.yaml variants, and the Dockerfiles. No AWS, no Prefect API."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shlex
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from deployments.events import EVENT, RESOURCE_PREFIX
from deployments.pools import (
    CPU_IMAGE,
    GPU_CAPACITY_PROVIDER,
    GPU_IMAGE,
    INGEST_JOB_VARIABLES,
    LAKE_MOUNT,
    MODALITY_JOB_VARIABLES,
    TEMPLATE_PATH,
    default_ecs_template,
    derive_ecs_template,
    efs_lake_job_variables,
    job_variables_for,
    main,
    render_template,
)
from tasks.common import MODALITIES

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "push": ROOT / "deployments" / "prefect-ecs-push.yaml",
    "worker": ROOT / "deployments" / "prefect-ecs.yaml",
}
DOCKERFILES = {
    "cpu": ROOT / "deployments" / "docker" / "Dockerfile",
    "gpu": ROOT / "deployments" / "docker" / "Dockerfile.gpu",
}
GPU_MODALITIES = {"image", "video"}
# What the YAML variants mount: the lake's EFS ids come from the deployer's environment.
YAML_LAKE = efs_lake_job_variables("{{ $BRAID_LAKE_EFS_ID }}", "{{ $BRAID_LAKE_EFS_ACCESS_POINT }}")
TASK_DEFINITION_ARN = "arn:aws:ecs:eu-west-1:123456789012:task-definition/braid:1"
# vCPU (1024 units) → memory MiB Fargate accepts (AWS: "Task CPU and memory").
FARGATE_MEMORY = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4097, 1024)),
    1024: set(range(2048, 8193, 1024)),
    2048: set(range(4096, 16385, 1024)),
    4096: set(range(8192, 30721, 1024)),
    8192: set(range(16384, 61441, 4096)),
    16384: set(range(32768, 122881, 8192)),
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE_PATH.read_text())


def leaves(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, scalar) in nested dicts and lists."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, (*path, i))
    else:
        yield path, obj


def lookup(obj: Any, path: tuple) -> Any:
    for part in path:
        try:
            obj = obj[part]
        except (KeyError, IndexError, TypeError):
            return KeyError
    return obj


# The template ---------------------------------------------------------------------------


def test_committed_template_is_what_the_installed_prefect_aws_derives():
    assert TEMPLATE_PATH.read_text() == render_template(derive_ecs_template()), (
        "run: python -m deployments.pools write"
    )


def test_template_keeps_everything_prefect_aws_offers(template):
    default = default_ecs_template()
    ours_vars, default_vars = template["variables"], default["variables"]
    assert set(default_vars["properties"]) <= set(ours_vars["properties"])
    assert set(ours_vars["properties"]) - set(default_vars["properties"]) == {
        "resource_requirements",
        "volumes",
        "mount_points",
    }
    assert ours_vars["definitions"] == default_vars["definitions"]
    assert template["job_configuration"].keys() == default["job_configuration"].keys()
    # Braid only adds to the job configuration: every placeholder and literal stays put.
    changed = [
        path
        for path, value in leaves(default["job_configuration"])
        if lookup(template["job_configuration"], path) != value
    ]
    assert changed == []


def test_template_passes_the_servers_checks(template):
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.schema_tools.validation import is_valid_schema

    validate_base_job_template(template)  # every placeholder is a declared variable
    is_valid_schema(template["variables"], preprocess=False)


def test_template_defaults_are_braids(template):
    props = template["variables"]["properties"]
    assert props["image"]["default"] == CPU_IMAGE
    assert "PLACEHOLDER" in props["image"]["description"]
    assert (props["cpu"]["default"], props["memory"]["default"]) == (1024, 4096)
    assert props["launch_type"]["default"] == "FARGATE"
    env = props["env"]["default"]
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["BRAID_LAKE"] == LAKE_MOUNT
    assert "HF_HUB_OFFLINE" not in env  # cloud tasks may fetch models
    for per_account in ("task_role_arn", "execution_role_arn", "cluster", "vpc_id"):
        assert props[per_account].get("default") is None


def test_overrides_set_defaults_and_unknown_names_are_refused():
    derived = derive_ecs_template({"cluster": "braid", "memory": 8192})
    assert derived["variables"]["properties"]["cluster"]["default"] == "braid"
    assert derived["variables"]["properties"]["memory"]["default"] == 8192
    with pytest.raises(ValueError, match="gpus"):
        derive_ecs_template({"gpus": 1})


def test_check_command_notices_a_stale_file(tmp_path, capsys):
    path = tmp_path / "template.json"
    assert main(["check", "--path", str(path)]) == 1
    assert main(["write", "--path", str(path)]) == 0
    assert main(["check", "--path", str(path)]) == 0
    stale = json.loads(path.read_text())
    del stale["variables"]["properties"]["cpu"]["default"]
    path.write_text(json.dumps(stale))
    assert main(["check", "--path", str(path)]) == 1
    assert "python -m deployments.pools write" in capsys.readouterr().err


# Job variables --------------------------------------------------------------------------


def test_every_modality_has_a_pool_and_gpus_go_to_image_and_video():
    assert set(MODALITY_JOB_VARIABLES) == set(MODALITIES)
    for modality, jv in MODALITY_JOB_VARIABLES.items():
        if modality in GPU_MODALITIES:
            assert jv["image"] == GPU_IMAGE
            assert jv["launch_type"] == "EC2"  # Fargate has no GPUs
            assert jv["resource_requirements"] == [{"type": "GPU", "value": "1"}]
        else:
            assert jv["image"] == CPU_IMAGE
            assert "resource_requirements" not in jv
            assert jv.get("launch_type", "FARGATE") == "FARGATE"


@pytest.mark.parametrize(
    "name, jv", [*MODALITY_JOB_VARIABLES.items(), ("ingest", INGEST_JOB_VARIABLES)]
)
def test_sizes_fit_where_they_run(name, jv):
    vcpus = jv["cpu"] // 1024
    if jv.get("launch_type", "FARGATE") == "FARGATE":
        assert jv["memory"] in FARGATE_MEMORY[jv["cpu"]], f"{name}: not a Fargate size"
    # Torch threads per Dask worker, times the flow's min(4, vCPUs) workers ≤ vCPUs.
    assert int(jv["env"]["BRAID_TORCH_THREADS"]) * min(4, vcpus) <= vcpus


def test_job_variables_for_each_platform():
    assert job_variables_for("video", "ecs") == job_variables_for("video", "ecs:push")
    assert job_variables_for("video")["image"] == GPU_IMAGE
    assert job_variables_for("text", "process") == {}
    mine = job_variables_for("text")
    mine["env"]["X"] = "1"  # a copy: changing it leaves the table alone
    assert "X" not in MODALITY_JOB_VARIABLES["text"]["env"]
    with pytest.raises(ValueError, match="cloud-run:push"):
        job_variables_for("text", "cloud-run:push")
    with pytest.raises(ValueError, match="unknown modality"):
        job_variables_for("pointcloud")


# Rendering through prefect-aws ----------------------------------------------------------


class NoPrefectApi:
    """A client for from_template_and_values that fails the test if anything uses it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rendering called the Prefect API: {name}")


@pytest.fixture
def no_aws(monkeypatch):
    """Any AWS client or session fails the test; the default-VPC lookup (the one AWS call on
    the path to a task run request for awsvpc tasks) answers a fixed network instead."""
    from prefect_aws.credentials import AwsCredentials
    from prefect_aws.workers.ecs_worker import ECSWorker

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rendering called AWS")

    monkeypatch.setattr(AwsCredentials, "get_client", refuse)
    monkeypatch.setattr(AwsCredentials, "get_boto3_session", refuse)
    network = {"awsvpcConfiguration": {"subnets": ["subnet-1"], "assignPublicIp": "ENABLED"}}
    monkeypatch.setattr(ECSWorker, "_load_network_configuration", lambda self, *a: network)


def render(template: dict, job_variables: dict, pool: str) -> tuple[Any, dict, dict, Any]:
    """What an ECS worker (or push pool) would register and run for one flow run.

    The steps of ECSWorker._prepare_and_create_task up to the boto3 calls: the job
    configuration from the pool's template and the deployment's job variables, prepared
    for a flow run, then the task definition and the RunTask request.
    """
    from prefect.client.schemas.objects import FlowRun
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

    config = asyncio.run(
        ECSJobConfiguration.from_template_and_values(
            template, copy.deepcopy(job_variables), client=NoPrefectApi()
        )
    )
    flow_run = FlowRun(flow_id=uuid4(), deployment_id=uuid4(), name="braid-test-run")
    config.prepare_for_flow_run(flow_run)
    worker = ECSWorker(work_pool_name=pool)
    task_definition = worker._prepare_task_definition(config, "eu-west-1", flow_run)
    worker._validate_task_definition(task_definition, config)
    request = worker._prepare_task_run_request(config, task_definition, TASK_DEFINITION_ARN, True)
    return config, task_definition, request, flow_run


@pytest.mark.parametrize("modality", MODALITIES)
def test_job_variables_render_into_the_ecs_task(template, no_aws, modality):
    jv = job_variables_for(modality) | efs_lake_job_variables("fs-0abc", "fsap-0abc")
    _, task_definition, request, flow_run = render(template, jv, f"braid-{modality}")

    (container,) = task_definition["containerDefinitions"]
    assert container["name"] == "prefect"
    assert container["image"] == jv["image"]
    assert (task_definition["cpu"], task_definition["memory"]) == (
        str(jv["cpu"]),
        str(jv["memory"]),
    )
    assert task_definition["family"].startswith(f"prefect_braid-{modality}_")
    assert "executionRoleArn" not in task_definition  # a per-account variable, unset here

    (override,) = request["overrides"]["containerOverrides"]
    assert override["command"] == ["prefect", "flow-run", "execute"]
    env = {item["name"]: item["value"] for item in override["environment"]}
    # The pool's defaults and the deployment's env, merged; the worker's own on top.
    assert env["BRAID_TORCH_THREADS"] == jv["env"]["BRAID_TORCH_THREADS"]
    assert env["BRAID_LAKE"] == LAKE_MOUNT
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert "HF_HUB_OFFLINE" not in env
    assert request["taskDefinition"] == TASK_DEFINITION_ARN

    assert task_definition["volumes"] == [
        {
            "name": "braid-lake",
            "efsVolumeConfiguration": {
                "fileSystemId": "fs-0abc",
                "transitEncryption": "ENABLED",
                "authorizationConfig": {"accessPointId": "fsap-0abc", "iam": "ENABLED"},
            },
        }
    ]
    assert container["mountPoints"] == [
        {"sourceVolume": "braid-lake", "containerPath": LAKE_MOUNT, "readOnly": False}
    ]

    if modality in GPU_MODALITIES:
        assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
        assert "FARGATE" not in task_definition.get("requiresCompatibilities", [])
        assert (container["cpu"], container["memory"]) == (jv["cpu"], jv["memory"])
        assert "launchType" not in request  # a capacity provider strategy replaces it
        assert request["capacityProviderStrategy"] == [
            {"capacityProvider": GPU_CAPACITY_PROVIDER, "weight": 1, "base": 0}
        ]
    else:
        assert "resourceRequirements" not in container
        assert task_definition["requiresCompatibilities"] == ["FARGATE"]
        assert task_definition["networkMode"] == "awsvpc"
        assert request["launchType"] == "FARGATE"
        assert "capacityProviderStrategy" not in request


def test_unused_braid_variables_leave_no_trace(template, no_aws):
    _, task_definition, _, _ = render(template, job_variables_for("text"), "braid-text")
    (container,) = task_definition["containerDefinitions"]
    assert "volumes" not in task_definition
    assert "mountPoints" not in container
    assert "resourceRequirements" not in container


def test_pool_defaults_alone_render(template, no_aws):
    _, task_definition, request, _ = render(template, {}, "braid-ingest")
    assert task_definition["containerDefinitions"][0]["image"] == CPU_IMAGE
    assert (task_definition["cpu"], task_definition["memory"]) == ("1024", "4096")
    env = {
        i["name"]: i["value"] for i in request["overrides"]["containerOverrides"][0]["environment"]
    }
    assert env["BRAID_LAKE"] == LAKE_MOUNT


# The prefect.yaml variants ---------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(VARIANTS), ids=str)
def variant(request) -> dict[str, Any]:
    return yaml.safe_load(VARIANTS[request.param].read_text())


def by_name(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in config["deployments"]}


def built_images(config: dict) -> dict[str, str]:
    """Build step id → the image it builds (`{{ <id>.image }}` in job variables)."""
    images = {}
    for step in config["build"]:
        (args,) = step.values()
        images[args["id"]] = f"{args['image_name']}:{args['tag']}"
    return images


def resolve_images(value: Any, images: dict[str, str]) -> Any:
    """``{{ build-….image }}`` replaced by what that build step built; all else as written."""
    if isinstance(value, dict):
        return {k: resolve_images(v, images) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_images(v, images) for v in value]
    if isinstance(value, str):
        match = re.fullmatch(r"\{\{\s*([\w-]+)\.image\s*\}\}", value)
        return images[match.group(1)] if match else value
    return value


def deploy_time(pool: dict, images: dict[str, str]) -> dict:
    """A work_pool section as `prefect deploy` stores it (prefect/cli/deploy/_core.py):
    environment placeholders first, then the build steps' outputs."""
    from prefect.utilities.templating import apply_values

    pool = apply_values(pool, os.environ, remove_notset=False)
    outputs = {step: {"image": image} for step, image in images.items()}
    return apply_values(pool, outputs, skip_prefixes=["ctx."])


def test_variants_differ_only_in_their_comments():
    push, worker = (yaml.safe_load(VARIANTS[k].read_text()) for k in ("push", "worker"))
    assert push == worker


def test_every_deployment_runs_a_flow_of_the_project(variant):
    deployments = by_name(variant)
    assert set(deployments) == {"ingest", "backfill", *(f"process-{m}" for m in MODALITIES)}
    for deployment in deployments.values():
        path, function = deployment["entrypoint"].split(":")
        assert path == "flows/pipeline.py"
        assert (ROOT / path).is_file()
        assert function.isidentifier()
        assert deployment["tags"] == ["braid"]


def test_process_deployments_run_on_their_modalitys_pool(variant):
    images = built_images(variant)
    deployments = by_name(variant)
    for modality in MODALITIES:
        deployment = deployments[f"process-{modality}"]
        assert deployment["entrypoint"] == "flows/pipeline.py:process_batch"
        pool = deployment["work_pool"]
        assert pool["name"] == f"braid-{modality}"
        jv = resolve_images(pool["job_variables"], images)
        assert jv == job_variables_for(modality) | YAML_LAKE
        assert jv["image"] == (GPU_IMAGE if modality in GPU_MODALITIES else CPU_IMAGE)
    for name in ("ingest", "backfill"):
        pool = deployments[name]["work_pool"]
        assert pool["name"] == "braid-ingest"
        assert resolve_images(pool["job_variables"], images) == INGEST_JOB_VARIABLES | YAML_LAKE


def test_what_prefect_deploy_stores_renders_into_the_ecs_task(
    variant, template, no_aws, monkeypatch
):
    """The YAML's job variables after deploy-time templating (the EFS ids from the
    deployer's environment, the images from the build steps), through prefect-aws."""
    monkeypatch.setenv("BRAID_LAKE_EFS_ID", "fs-0abc")
    monkeypatch.setenv("BRAID_LAKE_EFS_ACCESS_POINT", "fsap-0abc")
    images = built_images(variant)
    for name, deployment in by_name(variant).items():
        pool = deploy_time(deployment["work_pool"], images)
        _, task_definition, _, _ = render(template, pool["job_variables"], pool["name"])
        (container,) = task_definition["containerDefinitions"]
        modality = name.removeprefix("process-")
        assert container["image"] == (GPU_IMAGE if modality in GPU_MODALITIES else CPU_IMAGE)
        efs = task_definition["volumes"][0]["efsVolumeConfiguration"]
        assert efs["fileSystemId"] == "fs-0abc"
        assert efs["authorizationConfig"]["accessPointId"] == "fsap-0abc"
        assert container["mountPoints"][0]["containerPath"] == LAKE_MOUNT


def test_job_variables_are_valid_for_the_template(variant, template):
    """As the server checks a deployment's job variables against its pool's schema."""
    from prefect.utilities.schema_tools.validation import validate

    defaults = {
        name: prop["default"]
        for name, prop in template["variables"]["properties"].items()
        if prop.get("default") is not None
    }
    for deployment in variant["deployments"]:
        validate(
            defaults | deployment["work_pool"]["job_variables"],
            template["variables"],
            raise_on_error=True,
            preprocess=True,
            ignore_required=True,
            allow_none_with_default=True,
        )


def test_ingest_fans_out_and_is_triggered_at_once_and_when_a_burst_ends(variant):
    ingest = by_name(variant)["ingest"]
    assert ingest["parameters"] == {"lake_path": LAKE_MOUNT, "options": {"fan_out": "deployments"}}
    assert by_name(variant)["backfill"]["parameters"] == ingest["parameters"]
    assert ingest["concurrency_limit"] == 1
    at_once, window_closed = ingest["triggers"]
    for trigger in (at_once, window_closed):
        assert trigger["match"] == {"prefect.resource.id": f"{RESOURCE_PREFIX}*"}
        assert trigger["expect"] == [EVENT]
        assert trigger["posture"] == "Reactive"
        assert trigger["threshold"] == 1
        assert trigger["parameters"] == {"source": "{{ event.payload.source }}"}
        assert trigger["within"] > 0
    assert "schedule_after" not in at_once
    delay = re.fullmatch(r"PT(\d+)S", window_closed["schedule_after"])
    assert delay
    assert timedelta(seconds=int(delay.group(1))) == timedelta(seconds=window_closed["within"])
    assert {k: v for k, v in window_closed.items() if k != "schedule_after"} == at_once
    # The same triggers as the local stack's.
    local = by_name(yaml.safe_load((ROOT / "prefect.yaml").read_text()))["ingest"]
    assert ingest["triggers"] == local["triggers"]


def test_build_push_pull_use_the_projects_image(variant):
    images = built_images(variant)
    assert images == {"build-cpu": CPU_IMAGE, "build-gpu": GPU_IMAGE}
    dockerfiles = {}
    for step in variant["build"]:
        ((name, args),) = step.items()
        assert name == "prefect_docker.deployments.steps.build_docker_image"
        assert args["requires"].startswith("prefect-docker")
        dockerfiles[args["id"]] = ROOT / args["dockerfile"]
    assert dockerfiles == {"build-cpu": DOCKERFILES["cpu"], "build-gpu": DOCKERFILES["gpu"]}
    pushed = set()
    for step in variant["push"]:
        ((name, args),) = step.items()
        assert name == "prefect_docker.deployments.steps.push_docker_image"
        step_id = re.fullmatch(r"\{\{ ([\w-]+)\.image_name \}\}", args["image_name"]).group(1)
        assert args["tag"] == f"{{{{ {step_id}.tag }}}}"
        pushed.add(step_id)
    assert pushed == set(images)
    ((name, args),) = variant["pull"][0].items()
    assert name == "prefect.deployments.steps.set_working_directory"
    for dockerfile in DOCKERFILES.values():
        assert ("WORKDIR", args["directory"]) in parse_dockerfile(dockerfile)


SECRET_WORDS = ("secret", "password", "token", "api_key", "access_key", "credentials")


def test_no_plaintext_secrets(variant):
    for key in VARIANTS:
        text = VARIANTS[key].read_text()
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)  # AWS access key ids
        assert "aws_secret_access_key" not in text.lower()
        assert "PREFECT_API_KEY" not in text
    for path, value in leaves(variant):
        if any(word in str(part).lower() for part in path for word in SECRET_WORDS):
            assert isinstance(value, str)
            assert re.fullmatch(r"\{\{ prefect\.blocks\.[\w-]+\.[\w-]+ \}\}", value), path
    # `prefect deploy` resolves block references in a deployment's fields and stores the
    # values, so none may sit in job variables or parameters.
    for deployment in variant["deployments"]:
        stored = json.dumps([deployment["work_pool"], deployment["parameters"]])
        assert "prefect.blocks" not in stored, deployment["name"]


# The Dockerfiles --------------------------------------------------------------------------


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, f"{path}: dangling continuation"
    return instructions


def env_and_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for keyword, args in instructions:
        if keyword in ("ENV", "ARG"):
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                values[name] = value
    return values


def makefile_torch_spec() -> str:
    match = re.search(r"^TORCH_SPEC \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match
    return match.group(1)


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile(kind):
    path = DOCKERFILES[kind]
    instructions = parse_dockerfile(path)
    keywords = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")

    # A non-root user from the last USER to the end (and so for CMD).
    users = [i for i, k in enumerate(keywords) if k == "USER"]
    assert users, "no USER"
    user = instructions[users[-1]][1].split(":")[0]
    assert user not in ("root", "0")
    assert users[-1] < keywords.index("CMD")
    assert not [k for k in keywords[users[-1] :] if k in ("RUN", "COPY", "ADD")]
    assert any(k == "RUN" and f"--uid {user}" in a for k, a in instructions)

    # torch before the project and its dependencies, so their `torch>=…` is already met.
    runs = [(i, a) for i, (k, a) in enumerate(instructions) if k == "RUN"]
    torch_at = next(i for i, a in runs if "pip install" in a and "TORCH_SPEC" in a)
    deps_at = next(i for i, a in runs if "pip install -r" in a)
    project_at = next(i for i, a in runs if re.search(r"pip install( --no-deps)? \.(\s|$)", a))
    assert torch_at < deps_at < project_at
    values = env_and_args(instructions)
    assert values["TORCH_SPEC"] == makefile_torch_spec()
    torch_run = instructions[torch_at][1]
    if kind == "cpu":
        assert "--index-url https://download.pytorch.org/whl/cpu" in torch_run
    else:
        assert "whl/cpu" not in torch_run

    # Every COPY source exists and is let through by the file's .dockerignore.
    ignore = path.with_name(path.name + ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    copied = []
    for keyword, args in instructions:
        if keyword == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            assert not args.startswith("--from")
            copied += parts[:-1]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, source
    for package in ("flows", "tasks", "blocks", "data_quality", "deployments"):
        assert f"{package}/" in copied

    assert values["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "HF_HUB_OFFLINE" not in values
    secretish = [n for n in values if re.search(r"KEY|SECRET|TOKEN|PASSWORD", n)]
    assert secretish == []
    if kind == "gpu":
        assert values["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
