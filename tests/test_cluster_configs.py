"""cluster.yaml and clusters/local.yaml pass the checks `ray up` runs on them, offline.

`ray up` (ray.autoscaler._private.commands._bootstrap_config) calls ``prepare_config`` (merge
with the provider's defaults; for the local provider, build its node type from head_ip and
worker_ips), then ``validate_config`` (Ray's JSON schema and its cross-field rules). Both are
called here on the files as they are; nothing is launched and no cloud API is asked.
"""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import REPO

CLUSTER_FILES = ["cluster.yaml", "clusters/local.yaml"]


def _prepared(name: str) -> dict:
    config = yaml.safe_load((REPO / name).read_text())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_file_passes_ray_up_validation(name):
    config = _prepared(name)
    assert config["head_node_type"] in config["available_node_types"]
    # Every node installs this project (and so its pinned dependencies) from the copied checkout.
    assert config["file_mounts"]["~/image-search"] == "."
    assert any("pip install" in c and "-e ~/image-search" in c for c in config["setup_commands"])
    # Every node joins with token authentication, from the token file copied to it.
    assert "~/.ray/auth_token" in config["file_mounts"]
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    # The dashboard stays on the head's loopback: reached through `ray dashboard` (SSH), not a port.
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])
    assert "security_group" not in config["provider"]  # the launcher's group: SSH only from outside


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_no_command_makes_a_directory_world_writable(name):
    # The shared directory holds run directories whose space.py `resume` and `report` execute.
    config = _prepared(name)
    commands = [c for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                              "worker_setup_commands") for c in config.get(key, [])]  # fmt: skip
    modes = [m for c in commands for m in re.findall(r"chmod\s+(?:-\w+\s+)*(\S+)", c)]
    octal_others_write = [m for m in modes if m.isdigit() and int(m[-1]) & 2]
    symbolic_others_write = [m for m in modes if not m.isdigit() and re.search(r"(^|,)[oa]*\+[rwxXst]*w", m)]
    assert not octal_others_write and not symbolic_others_write, modes


def test_cloud_cluster_has_a_cpu_head_and_autoscaling_gpu_workers_on_shared_storage():
    config = _prepared("cluster.yaml")
    assert config["provider"]["type"] == "aws"
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for n, t in config["available_node_types"].items() if n != config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and "GPU" not in head["resources"]
    assert workers and all(w["resources"].get("GPU", 0) >= 1 for w in workers)
    assert all(w["min_workers"] < w["max_workers"] for w in workers)  # the autoscaler adds and removes
    assert any("/shared" in c and "mount" in c for c in config["initialization_commands"])
    assert "-v /shared:/shared" in config["docker"]["run_options"]
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0-py311-gpu")  # the pinned Ray


def test_on_premise_cluster_uses_the_local_provider():
    config = _prepared("clusters/local.yaml")
    assert config["provider"]["type"] == "local"
    (node_type,) = config["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"])


def test_validation_rejects_a_broken_cluster_file():
    # The validation is real: a misspelt field and an inconsistent worker count fail it.
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(copy.deepcopy(config)))
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["min_workers"] = 9
    with pytest.raises(ValueError, match="smaller than the sum of `min_workers`"):
        validate_config(prepare_config(copy.deepcopy(config)))
