#!/usr/bin/env python3
"""Checks across the deployment files that no schema linter can make.

  1. k8s/kustomization.yaml lists every manifest in k8s/ and nothing missing;
  2. the ConfigMap's server.yaml / model.yaml use only keys that config/*.yaml
     has (our config parser rejects unknown keys, so a typo is a pod that
     exits 2), and are written out for `stt serve`'s own parser (--extract);
  3. the Deployment agrees with the ConfigMap: probe and container ports are
     server.port / server.metrics_port, the mounted files are the ones
     `--config` / `--model-config` name, and terminationGracePeriodSeconds
     covers preStop + server.shutdown_grace_sec.

Usage: check-deploy.py [--extract DIR]   (run from the repository root with
a Python that has PyYAML). Exit 1 with one line per problem.
"""

import sys
from pathlib import Path

import yaml

K8S = Path("k8s")
problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def key_paths(node, prefix: str = "") -> set[str]:
    """Every mapping key path (`server.port`) in a YAML tree."""
    paths: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            paths.add(path)
            # decode_profiles.<name> holds user-chosen names: compare the
            # keys below them against any profile's keys instead.
            child = "decode_profiles.*." if path == "decode_profiles" else f"{path}."
            if path == "decode_profiles" and isinstance(value, dict):
                for profile in value.values():
                    paths |= key_paths(profile, child)
            else:
                paths |= key_paths(value, child)
    return paths


def check_kustomization() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust.get("resources", []))
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    for name in sorted(listed - present):
        fail(f"k8s/kustomization.yaml: resource {name} does not exist")
    for name in sorted(present - listed):
        fail(f"k8s/kustomization.yaml: k8s/{name} is not listed in resources")


def check_configmap(extract: Path | None) -> dict:
    (cm,) = [d for d in load_all(K8S / "configmap.yaml") if d.get("kind") == "ConfigMap"]
    parsed = {}
    for name in ("server.yaml", "model.yaml"):
        text = cm.get("data", {}).get(name)
        if text is None:
            fail(f"k8s/configmap.yaml: data.{name} is missing")
            continue
        ours = yaml.safe_load(text) or {}
        reference = yaml.safe_load((Path("config") / name).read_text())
        for key in sorted(key_paths(ours) - key_paths(reference)):
            fail(f"k8s/configmap.yaml: data.{name}: key {key} is not in config/{name} "
                 "(stt serve rejects unknown keys)")
        parsed[name] = ours
        if extract:
            (extract / name).write_text(text)
    return parsed


def check_deployment(config: dict) -> None:
    (dep,) = [d for d in load_all(K8S / "deployment.yaml") if d.get("kind") == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (ctr,) = [c for c in pod["containers"] if c["name"] == "stt"]
    server = config.get("server.yaml", {}).get("server", {})
    grpc_port = server.get("port", 50051)
    http_port = server.get("metrics_port", 8000)
    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    if ports.get("grpc") != grpc_port:
        fail(f"k8s/deployment.yaml: containerPort grpc {ports.get('grpc')} != server.port {grpc_port}")
    if ports.get("http") != http_port:
        fail(f"k8s/deployment.yaml: containerPort http {ports.get('http')} != server.metrics_port {http_port}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = ctr.get(probe)
        if not spec:
            fail(f"k8s/deployment.yaml: {probe} is missing")
            continue
        if "grpc" in spec and spec["grpc"]["port"] != grpc_port:
            fail(f"k8s/deployment.yaml: {probe} grpc port {spec['grpc']['port']} != server.port {grpc_port}")
        if "httpGet" in spec and spec["httpGet"]["port"] not in ("http", http_port):
            fail(f"k8s/deployment.yaml: {probe} httpGet port is not the control plane ({http_port})")

    # --config / --model-config must name files the ConfigMap volume provides.
    args = ctr.get("args", [])
    mounts = {m["name"]: m["mountPath"] for m in ctr.get("volumeMounts", [])}
    cm_volumes = [v for v in pod.get("volumes", []) if "configMap" in v]
    provided = set()
    for vol in cm_volumes:
        items = vol["configMap"].get("items") or [{"path": k} for k in ("server.yaml", "model.yaml")]
        for item in items:
            if vol["name"] in mounts:
                provided.add(f"{mounts[vol['name']].rstrip('/')}/{item['path']}")
    for flag in ("--config", "--model-config"):
        if flag not in args:
            fail(f"k8s/deployment.yaml: args lack {flag}")
        elif args.index(flag) + 1 >= len(args) or args[args.index(flag) + 1] not in provided:
            fail(f"k8s/deployment.yaml: {flag} does not name a file of the mounted ConfigMap")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    shutdown = server.get("shutdown_grace_sec", 10)
    pre_stop = 0
    cmd = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if len(cmd) == 2 and cmd[0] == "sleep":
        pre_stop = int(cmd[1])
    if grace <= pre_stop + shutdown:
        fail(f"k8s/deployment.yaml: terminationGracePeriodSeconds {grace} must exceed preStop "
             f"{pre_stop} s + server.shutdown_grace_sec {shutdown} s")


def main() -> None:
    extract = None
    if "--extract" in sys.argv:
        extract = Path(sys.argv[sys.argv.index("--extract") + 1])
    check_kustomization()
    config = check_configmap(extract)
    check_deployment(config)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
