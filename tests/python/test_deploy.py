"""The deployment files (deploy/): Kubernetes manifests validated offline
against the Kubernetes API schemas, the kustomization rendered when a
kubectl is at hand, and every flag the manifests and the Slurm script
give `tensorgate-host worker` or `tensorgate-gateway` accepted by the real
binary's subcommand."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
GATEWAY_BIN = ROOT / "target" / "release" / "tensorgate-gateway"
K8S_VERSION = "1.32.0"


def resources(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_each_manifest_is_valid_kubernetes(path: Path):
    docs = resources(path.read_text())
    assert docs, f"{path} holds no resource"
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_and_renders():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in manifest_files())
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl here to render the kustomization (each manifest is validated above)")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], check=True, capture_output=True, text=True).stdout
    rendered = resources(out)
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["Namespace", "ConfigMap", "Secret", "Service", "Service", "StatefulSet", "Deployment", "Deployment"])
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "tensorgate"


def flags(*command: str) -> set[str]:
    help_text = subprocess.run([*command, "--help"], check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", help_text))


def test_every_flag_the_deployment_files_use_exists():
    for binary in (HOST_BIN, GATEWAY_BIN):
        if not binary.exists():
            pytest.fail(f"{binary} is missing: build it with scripts/setup")
    known = {
        "worker": flags(str(HOST_BIN), "worker"),
        "gateway": flags(str(GATEWAY_BIN)),
    }
    used: list[tuple[str, str, str]] = []
    for path in manifest_files():
        for doc in resources(path.read_text()):
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                if not c["image"].startswith("tensorgate"):
                    continue
                args = c.get("args", [])
                # The slim gateway image runs tensorgate-gateway; the others tensorgate-host SUBCOMMAND.
                role = "gateway" if c["image"] == "tensorgate-gateway" else args[0]
                assert role in known, f"{path.name}: {c['name']} runs `{role}`"
                used += [(path.name, role, a) for a in args if a.startswith("--")]
                env = {e["name"] for e in c.get("env", [])}
                assert "TENSORGATE_NATS" in env, f"{path.name}: {c['name']} has no engine URL"
    sbatch = (ROOT / "deploy" / "slurm" / "worker.sbatch").read_text()
    run = sbatch.split("apptainer run", 1)[1]
    assert re.search(r'"\$SIF"\s+worker\b', run), "the Slurm job runs the worker subcommand"
    used += [("worker.sbatch", "worker", f) for f in re.findall(r"(?<![A-Za-z#])--[a-z][a-z0-9-]*", run)
             if f not in ("--nv", "--bind")]
    assert len(used) >= 8
    assert {r for _, r, _ in used} == {"worker", "gateway"}
    unknown = [(f, role, flag) for f, role, flag in used if flag not in known[role]]
    assert not unknown, f"flags the binaries do not accept: {unknown}"
    subprocess.run(["bash", "-n", str(ROOT / "deploy" / "slurm" / "worker.sbatch")], check=True)
