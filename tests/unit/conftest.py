"""Shared set-up of the unit tests, done before any test module is imported.

* The checkout becomes importable as ``ansible_collections.rhoim.inference``: ansible-test does
  this itself; plain pytest needs a folder whose path ends in ``ansible_collections/rhoim/inference``.
  A symlink is enough for imports.
* ``tests/support`` is importable, so tests ``import hub_server`` (the Hub stand-in).
* huggingface_hub reads its settings when first imported: they are pinned here, before that, so
  that no test reaches the network or the user's Hub cache and token.
"""

import os
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collection_parent():
    parts = _ROOT.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "rhoim"] and parts[-1] == "inference":
        return os.sep.join(parts[:-3])
    base = os.path.join(tempfile.gettempdir(), "rhoim-pytest-%d" % os.getuid())
    link = os.path.join(base, "ansible_collections", "rhoim", "inference")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.realpath(link) != _ROOT:
        tmp = link + ".%d" % os.getpid()
        os.symlink(_ROOT, tmp)
        os.replace(tmp, link)
    return base


_PARENT = _collection_parent()
if _PARENT not in sys.path:
    sys.path.insert(0, _PARENT)

_SUPPORT = os.path.join(_ROOT, "tests", "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)

os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="rhoim-unit-hf-home-"))
