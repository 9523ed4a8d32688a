"""Benchmark of rhoim.inference.hf_model against ``hf download`` (not a test; ``make test`` does not run it).

    .venv/bin/python tests/bench/bench_hf_model.py [--size-gib 2] [--files 4] [--runs 3] [--noop-gib 1,8]

Against tests/support/hub_server.py on loopback (its own process), with fixture repos generated
once into a temporary folder (random-looking data, real sha256 listed by the server):

1. First laydown: our module_utils in-process (``Laydown.run()``, sha256 verified while streaming)
   and ``hf download --local-dir`` (huggingface_hub's CLI, plain HTTP: ``HF_HUB_DISABLE_XET=1``),
   alternating A B A B, each into an empty folder, each timer stopped after ``os.sync()``.
   Prints MB/s of each run, the medians and the ratio A/B (target >= 2).
2. No-op re-run in-process for models of each ``--noop-gib`` size, pinned to the commit (no Hub
   request) and by branch (one request); target < 0.1 s and within 20% across sizes.
3. Peak RSS (``ru_maxrss``) of a process that lays down the ``--size-gib`` model; target < 200 MB.

Needs about 2 x (size-gib + sum(noop-gib)) GiB free where --workdir is; checked with statvfs first.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(PROJECT, "build", "collections"))

GIB = 1024 ** 3
MIB = 1024 ** 2
BLOCK = 64 * MIB


def make_repo(root, repo_id, total, nfiles):
    """``nfiles`` LFS files adding up to ``total`` bytes, plus a config.json. Fast: a random block
    written over and over, each block stamped with its file and offset so no two blocks are equal."""
    ref = os.path.join(root, repo_id, "refs", "main")
    os.makedirs(ref, exist_ok=True)
    with open(os.path.join(ref, "config.json"), "w") as f:
        json.dump({"bench": repo_id, "bytes": total}, f)
    base = bytearray(os.urandom(BLOCK))
    size = total // nfiles
    for i in range(nfiles):
        path = os.path.join(ref, "model-%05d-of-%05d.safetensors" % (i + 1, nfiles))
        if os.path.exists(path) and os.path.getsize(path) == size:
            continue
        with open(path, "wb") as f:
            left = size
            n = 0
            while left:
                stamp = b"%s:%d:%d:" % (repo_id.encode(), i, n)
                base[: len(stamp)] = stamp
                k = min(left, BLOCK)
                f.write(memoryview(base)[:k])
                left -= k
                n += 1


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def start_server(root, workdir):
    port_file = os.path.join(workdir, "port.json")
    if os.path.exists(port_file):
        os.unlink(port_file)
    proc = subprocess.Popen([sys.executable, os.path.join(PROJECT, "tests", "support", "hub_server.py"),
                             "--root", root, "--port-file", port_file,
                             "--hash-cache", os.path.join(workdir, "hash-cache.json")])
    deadline = time.time() + 600
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit("hub_server did not start")
        time.sleep(0.2)
    with open(port_file) as f:
        port = json.load(f)["port"]
    return proc, "http://127.0.0.1:%d" % port


def laydown(endpoint, repo_id, dest, revision="main", verify="quick"):
    from ansible_collections.rhoim.inference.plugins.module_utils.hf_hub import HubClient
    from ansible_collections.rhoim.inference.plugins.module_utils.hf_store import Laydown

    params = {"repo_id": repo_id, "revision": revision, "dest": dest, "endpoint": endpoint, "verify": verify,
              "state": "present", "keep_revisions": 1, "protect_revisions": [], "mode": "0644",
              "lock_timeout": 10, "min_free_bytes": 0}
    return Laydown(params, lambda: HubClient(endpoint=endpoint, retries=5, backoff=0.5)).run()


def dir_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        if ".cache" in root.split(os.sep):
            continue
        for n in files:
            total += os.path.getsize(os.path.join(root, n))
    return total


def run_ours(endpoint, repo_id, dest):
    t0 = time.perf_counter()
    result = laydown(endpoint, repo_id, dest)
    os.sync()
    return time.perf_counter() - t0, result["bytes"]


def run_hf(endpoint, repo_id, dest):
    env = dict(os.environ, HF_HUB_DISABLE_XET="1", HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=os.path.join(os.path.dirname(dest), "hf-home"))
    hf = os.path.join(os.path.dirname(sys.executable), "hf")
    t0 = time.perf_counter()
    subprocess.run([hf, "download", repo_id, "--local-dir", dest], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.sync()
    return time.perf_counter() - t0, dir_bytes(dest)


def peak_rss(endpoint, repo_id, dest):
    code = ("import sys; sys.path.insert(0, %r); sys.path.insert(0, %r); import bench_hf_model as b; "
            "b.laydown(%r, %r, %r)" % (os.path.join(PROJECT, "build", "collections"), HERE, endpoint, repo_id, dest))
    proc = subprocess.Popen([sys.executable, "-c", code])
    _pid, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit("laydown in a subprocess failed: status %d" % status)
    return usage.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None, help="where fixtures and outputs go (default: a temp folder in /var/tmp)")
    ap.add_argument("--size-gib", type=float, default=2.0, help="LFS bytes of the throughput model (default 2)")
    ap.add_argument("--files", type=int, default=4, help="LFS files in the throughput model (default 4)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each tool (default 3)")
    ap.add_argument("--noop-gib", default="1,8", help="sizes of the no-op models, GiB (default 1,8)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--skip-throughput", action="store_true", help="only the no-op and RSS parts")
    args = ap.parse_args()

    noop_sizes = [float(x) for x in args.noop_gib.split(",") if x]
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-hf-model-", dir="/var/tmp")
    os.makedirs(workdir, exist_ok=True)
    need = int((2 * args.size_gib + 2 * sum(noop_sizes) + 1) * GIB)
    free = free_bytes(workdir)
    print("work folder %s: %.1f GiB free, %.1f GiB needed" % (workdir, free / GIB, need / GIB))
    if free < need:
        raise SystemExit("not enough disk: need %.1f GiB, %.1f GiB free; lower --noop-gib or --size-gib" % (need / GIB, free / GIB))
    hub_root = os.path.join(workdir, "hub")
    server = None
    try:
        t0 = time.time()
        make_repo(hub_root, "bench/big", int(args.size_gib * GIB), args.files)
        for s in noop_sizes:
            # The same number of files whatever the size: a no-op run's cost may grow with files, not bytes.
            make_repo(hub_root, "bench/noop-%g" % s, int(s * GIB), 8)
        # Written back before the first timed run, so that no run pays for the fixtures.
        os.sync()
        print("fixtures written in %.1f s" % (time.time() - t0))
        t0 = time.time()
        server, endpoint = start_server(hub_root, workdir)
        print("hub_server up (root hashed) in %.1f s at %s" % (time.time() - t0, endpoint))

        # 1. Throughput, A B A B.
        rates = {"ours": [], "hf": []}
        for i in range(0 if args.skip_throughput else args.runs):
            for name, fn in (("ours", run_ours), ("hf", run_hf)):
                dest = os.path.join(workdir, "out-%s-%d" % (name, i))
                secs, nbytes = fn(endpoint, "bench/big", dest)
                rate = nbytes / secs / 1e6
                rates[name].append(rate)
                print("run %d %-4s %.2f s  %.0f MB/s  (%d bytes)" % (i + 1, name, secs, rate, nbytes), flush=True)
                shutil.rmtree(dest)
        shutil.rmtree(os.path.join(workdir, "hf-home"), ignore_errors=True)
        if rates["ours"]:
            m_ours, m_hf = statistics.median(rates["ours"]), statistics.median(rates["hf"])
            print("first laydown, median MB/s: ours (verified) %.0f, hf download %.0f, ratio %.2fx (target >= 2x)"
                  % (m_ours, m_hf, m_ours / m_hf))

        # 2. No-op re-runs.
        noop = {}
        for s in noop_sizes:
            repo = "bench/noop-%g" % s
            dest = os.path.join(workdir, "noop-%g" % s)
            first = laydown(endpoint, repo, dest)
            times_pinned, times_branch = [], []
            for _attempt in range(7):
                t = time.perf_counter()
                r = laydown(endpoint, repo, dest, revision=first["revision"])
                times_pinned.append(time.perf_counter() - t)
                assert not r["changed"] and r["bytes_downloaded"] == 0
                t = time.perf_counter()
                r = laydown(endpoint, repo, dest, revision="main")
                times_branch.append(time.perf_counter() - t)
                assert not r["changed"] and r["bytes_downloaded"] == 0
            noop[s] = (statistics.median(times_pinned), statistics.median(times_branch))
            print("no-op %g GiB (%d files): pinned commit %.4f s, branch %.4f s (medians of 7)"
                  % (s, first["files"], noop[s][0], noop[s][1]))
            shutil.rmtree(dest)
        if len(noop) > 1:
            pinned = [v[0] for v in noop.values()]
            print("no-op spread, pinned: %.0f%% (target within 20%%)" % (100 * (max(pinned) - min(pinned)) / min(pinned)))

        # 3. Peak RSS.
        dest = os.path.join(workdir, "out-rss")
        rss = peak_rss(endpoint, "bench/big", dest)
        shutil.rmtree(dest)
        print("peak RSS of a process laying down %g GiB: %.0f MB (target < 200 MB)" % (args.size_gib, rss / 1e6))
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
