"""Offline stand-in for ansible-test's get-pip bootstrap script.

ansible-test downloads get-pip.py to seed the virtualenvs it makes for sanity tests; this
machine kind cannot reach that host. This script gets pip from the interpreter's own
ensurepip and then installs the requested packages from the configured package index.
ensurepip runs in a subprocess because in-process it sets PIP_CONFIG_FILE=/dev/null,
which would drop the CA settings of /etc/pip.conf.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
