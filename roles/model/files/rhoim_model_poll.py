"""One poll of an hf_model job started with async, for the model role's progress display.

    python3 rhoim_model_poll.py RESULTS_FILE PROGRESS_FILE SECONDS

Waits up to SECONDS for the async job (its results file) to finish, returning early when it does,
then prints its state and the progress file hf_model writes as one JSON object:
{"finished": bool, "progress": {...} or null}. The poll that sees the job finished removes the
progress file.
"""

import json
import os
import sys
import time


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv):
    results, progress_file, seconds = argv[1], argv[2], float(argv[3])
    deadline = time.monotonic() + seconds
    while True:
        job = load(results)
        finished = job is not None and ("started" not in job or bool(job.get("finished")))
        if finished or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    progress = load(progress_file)
    if finished:
        try:
            os.unlink(progress_file)
        except OSError:
            pass
    print(json.dumps({"finished": finished, "progress": progress}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
