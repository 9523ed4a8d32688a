"""Make the checkout importable as ``ansible_collections.rhoim.inference`` for plain pytest.

ansible-test does this itself; plain pytest needs a folder whose path ends in
``ansible_collections/rhoim/inference``. A symlink is enough for imports.
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
