"""The Kubernetes manifests agree with the auditlock.toml they ship (ConfigMap) and with the bucket as code.

The linters (tests/test_deploy_lint.py) check each file against Kubernetes' schemas and best practice; these tests
check what no linter knows: that the spool, the config, the probes' port and the grace period fit together.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditlock.bucket.lifecycle import bucket_configuration
from auditlock.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
WORKLOADS = [K8S / "deployment.yaml", K8S / "statefulset" / "statefulset.yaml", K8S / "capture" / "statefulset.yaml"]
CONFIG_MOUNT = "/etc/auditlock"


def documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_spec(path: Path) -> dict[str, Any]:
    """The pod template's spec of the one workload in `path`."""
    [workload] = [doc for doc in documents(path) if doc["kind"] in ("Deployment", "StatefulSet")]
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def agent_container(spec: dict[str, Any]) -> dict[str, Any]:
    """The auditlock agent: the init container that runs as a native sidecar."""
    [agent] = [c for c in spec.get("initContainers", []) if c["name"] == "auditlock-agent"]
    return agent


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The app containers and the agent sidecar."""
    return [*spec["containers"], agent_container(spec)]


@pytest.fixture(scope="module")
def shipped_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The auditlock.toml of the ConfigMap, loaded as the agent loads it."""
    [configmap] = [doc for doc in documents(K8S / "common" / "configmap.yaml") if doc["kind"] == "ConfigMap"]
    path = tmp_path_factory.mktemp("configmap") / "auditlock.toml"
    path.write_text(configmap["data"]["auditlock.toml"])
    return load_config(path, environ={})


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.name)
class TestWorkloads:
    def test_agent_is_a_native_sidecar_reading_the_configmap(self, workload: Path) -> None:
        """The agent is an init container with restartPolicy Always, given the mounted config file."""
        agent = agent_container(pod_spec(workload))
        assert agent["restartPolicy"] == "Always"
        assert agent["args"] == ["--config", f"{CONFIG_MOUNT}/auditlock.toml"]
        assert {"name": "auditlock-config", "mountPath": CONFIG_MOUNT, "readOnly": True} in agent["volumeMounts"]

    def test_agent_mounts_the_spool_volume_above_the_configured_dir(self, workload: Path,
                                                                    shipped_config: Config) -> None:
        """The agent mounts the spool volume at the parent of `[spool] dir` and creates the directory itself (a
        volume's root may be 0777, which the agent refuses)."""
        mounts = {m["mountPath"]: m for m in agent_container(pod_spec(workload))["volumeMounts"]}
        assert mounts[str(shipped_config.spool.dir.parent)] == {
            "name": "spool", "mountPath": str(shipped_config.spool.dir.parent)}

    def test_app_mounts_only_the_spool_directory(self, workload: Path, shipped_config: Config) -> None:
        """The app mounts the spool directory the agent created (subPath), not the volume's root it could rename
        the spool away in, and never the agent's state."""
        for app in pod_spec(workload)["containers"]:
            mounts = {m["name"]: m for m in app["volumeMounts"]}
            assert mounts["spool"] == {"name": "spool", "mountPath": str(shipped_config.spool.dir),
                                       "subPath": shipped_config.spool.dir.name}
            assert "agent-state" not in mounts

    def test_app_and_agent_run_as_different_uids_sharing_the_spool_group(self, workload: Path) -> None:
        """Two identities: the app and the agent (the image's USER) have different UIDs, neither root; the agent's
        group is the pod's fsGroup, which every container has as a supplementary group."""
        spec = pod_spec(workload)
        agent = agent_container(spec)["securityContext"]
        apps = [c["securityContext"] for c in spec["containers"]]
        assert all(ctx["runAsUser"] not in (0, agent["runAsUser"]) for ctx in apps)
        assert agent["runAsUser"] != 0
        assert f"USER {agent['runAsUser']}:{agent['runAsGroup']}" in (REPO / "deploy" / "Dockerfile").read_text()
        assert agent["runAsGroup"] == spec["securityContext"]["fsGroup"]
        assert all(ctx["runAsGroup"] != spec["securityContext"]["fsGroup"] for ctx in apps)

    def test_agent_state_is_on_a_volume_only_the_agent_mounts(self, workload: Path) -> None:
        """`[agent] state_dir` (set in the agent's environment) lies under a mount of a volume no app container
        mounts."""
        spec = pod_spec(workload)
        agent = agent_container(spec)
        state_dir = {e["name"]: e["value"] for e in agent["env"]}["AUDITLOCK_AGENT_STATE_DIR"]
        [volume] = [m["name"] for m in agent["volumeMounts"] if state_dir.startswith(m["mountPath"] + "/")]
        assert volume == "agent-state"
        assert all(m["name"] != volume for c in spec["containers"] for m in c["volumeMounts"])

    def test_volume_modes_are_not_widened_on_restart(self, workload: Path) -> None:
        """fsGroup re-chmods a volume only when its root does not match, not at every start (which would make the
        agent's quarantine and the segments group-writable)."""
        assert pod_spec(workload)["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"

    def test_probes_reach_the_configured_port(self, workload: Path, shipped_config: Config) -> None:
        """The agent listens on all interfaces at `[agent] http_port`, where its probes look."""
        agent = agent_container(pod_spec(workload))
        ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
        assert shipped_config.agent.http_host == "0.0.0.0"
        for probe in ("startupProbe", "livenessProbe"):
            assert ports[agent[probe]["httpGet"]["port"]] == shipped_config.agent.http_port
            assert agent[probe]["httpGet"]["path"] in ("/healthz", "/readyz")

    def test_grace_period_covers_app_shutdown_and_agent_drain(self, workload: Path, shipped_config: Config) -> None:
        """terminationGracePeriodSeconds exceeds the gunicorn drop-in's graceful_timeout plus the agent's drain."""
        app_shutdown_s = runpy.run_path(str(REPO / "deploy" / "logging" / "gunicorn.conf.py"))["graceful_timeout"]
        grace = pod_spec(workload)["terminationGracePeriodSeconds"]
        assert grace > app_shutdown_s + shipped_config.agent.grace_period_s


class TestShippedConfig:
    def test_bucket_rules_match_the_bucket_as_code(self, shipped_config: Config) -> None:
        """The deployed config derives the same lifecycle and Object Lock as the example the CloudFormation
        template is checked against, so the stack and the pods agree on retention."""
        example = load_config(REPO / "examples" / "auditlock.toml", environ={})
        assert bucket_configuration(shipped_config) == bucket_configuration(example)
        assert (shipped_config.sink.bucket, shipped_config.sink.prefix) == (example.sink.bucket, example.sink.prefix)


class TestCaptureWorkload:
    """deploy/k8s/capture: one capture process per slot, its credential its own, its probes on its configured port."""

    WORKLOAD = K8S / "capture" / "statefulset.yaml"

    def test_exactly_one_replica_of_a_statefulset(self) -> None:
        """One slot is read by one process: a StatefulSet of one (no overlap during a rollout, unlike a Deployment)."""
        [workload] = [doc for doc in documents(self.WORKLOAD) if doc["kind"] == "StatefulSet"]
        assert workload["spec"]["replicas"] == 1

    def test_capture_runs_the_capture_command_on_the_configmap(self, shipped_config: Config) -> None:
        """The capture container runs `auditlock capture --config` with the mounted file, from the agent's image."""
        spec = pod_spec(self.WORKLOAD)
        [capture] = spec["containers"]
        assert capture["command"] == ["auditlock", "capture"]
        assert capture["args"] == ["--config", f"{CONFIG_MOUNT}/auditlock.toml"]
        assert capture["image"] == agent_container(spec)["image"]
        assert shipped_config.capture is not None

    def test_only_capture_mounts_the_database_credential(self, shipped_config: Config) -> None:
        """The DSN Secret is mounted in the capture container, at the directory of `[capture] dsn_file`, and nowhere
        else; capture runs as a user of its own, not the agent's."""
        spec = pod_spec(self.WORKLOAD)
        [capture] = spec["containers"]
        assert shipped_config.capture is not None
        assert shipped_config.capture.dsn_file is not None
        mounts = {m["name"]: m["mountPath"] for m in capture["volumeMounts"]}
        assert mounts["capture-dsn"] == str(shipped_config.capture.dsn_file.parent)
        assert all(m["name"] != "capture-dsn" for m in agent_container(spec)["volumeMounts"])
        assert capture["securityContext"]["runAsUser"] != agent_container(spec)["securityContext"]["runAsUser"]

    def test_probes_reach_the_configured_capture_port(self, shipped_config: Config) -> None:
        """Capture listens beyond loopback on `[capture] http_port`, the port its probes use."""
        [capture] = pod_spec(self.WORKLOAD)["containers"]
        assert shipped_config.capture is not None
        assert shipped_config.capture.http_host == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in capture["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert ports[capture[probe]["httpGet"]["port"]] == shipped_config.capture.http_port
