"""Fixture repos for tests/support/hub_server.py: two small models, made the same way every time.

    make_hub_fixtures.py ROOT

Layout ``ROOT/<org>/<name>/refs/<ref>/files`` (see hub_server.py).  Contents come from a seeded
generator, so commit shas are the same on every run.  No real weights: the ``.safetensors`` files
are random bytes, which the Hub serves as LFS files (sha256 in the tree, CDN redirect).

* ``acme/tiny-a``: ``main`` and ``v2`` (a tag; only ``config.json`` differs).
* ``acme/tiny-b``: ``main`` with files in a sub-folder and a README that the role leaves out.
"""

import json
import os
import random
import sys

MIB = 1024 * 1024


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def blob(seed, size):
    return random.Random(seed).randbytes(size)


def js(obj):
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def make(root):
    a = os.path.join(root, "acme", "tiny-a")
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 256}
    common = {
        "tokenizer.json": js({"model": {"type": "BPE", "vocab": {chr(65 + i): i for i in range(26)}}}),
        "generation_config.json": js({"max_new_tokens": 32}),
        "model.safetensors": blob("tiny-a-weights", 2 * MIB + 12345),
    }
    for ref, cfg in (("main", config), ("v2", dict(config, num_hidden_layers=3))):
        for name, data in dict(common, **{"config.json": js(cfg)}).items():
            write(os.path.join(a, "refs", ref, name), data)
    write(os.path.join(a, "repo.json"), js({"tags": ["v2"]}))

    b = os.path.join(root, "acme", "tiny-b", "refs", "main")
    files = {
        "config.json": js({"architectures": ["MistralForCausalLM"], "hidden_size": 32}),
        "README.md": b"# tiny-b\nA fixture, not a model.\n",
        "weights/model-00001-of-00002.safetensors": blob("tiny-b-1", 3 * MIB // 2),
        "weights/model-00002-of-00002.safetensors": blob("tiny-b-2", MIB),
    }
    files["weights/model.safetensors.index.json"] = js({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                       "b": "model-00002-of-00002.safetensors"}})
    for name, data in files.items():
        write(os.path.join(b, name), data)


if __name__ == "__main__":
    make(sys.argv[1])
