"""Runs secret-stealing programs through codepeft's sandbox as the user it is started as.

Started by tests/security/test_secrets.py (as an ordinary user, and as root where the tests run as
root) with secrets where users keep them: in its environment (HF_TOKEN, WANDB_API_KEY, cloud keys),
on its command line, in its memory, in a sibling process of the same user (a shell that exported
them), and in the files of its home directory. It reads a JSON job from stdin and prints one JSON
line per run. It imports only `codepeft.execution` (stdlib and psutil), so an interpreter that the
ordinary user can run serves, whatever the test's own interpreter is.
"""

import json
import os
import subprocess
import sys

from codepeft.errors import CodepeftError
from codepeft.execution import Limits, execute

job = json.loads(sys.stdin.read())
sibling = subprocess.Popen(["sleep", "120"], env={"PATH": "/usr/bin:/bin", "HF_TOKEN": job["sibling_secret"]})
limits = Limits(**job["limits"])
try:
    for run in job["runs"]:
        os.environ["CODEPEFT_SANDBOX_REUSE"] = "0" if run["level"] == "bwrap-fresh" else "1"
        level = "bwrap" if run["level"] == "bwrap-fresh" else run["level"]
        program = run["program"].replace("@HOST_PID@", str(os.getpid())).replace("@SIBLING_PID@", str(sibling.pid))
        try:
            result = execute(program, "python", limits, isolation=level)
        except CodepeftError as err:  # e.g. bubblewrap needs user namespaces this user may not create
            print(json.dumps({**run, "outcome": "unavailable", "isolation": None, "stdout": "", "stderr": str(err)}))
            continue
        record = {**run, "outcome": str(result.outcome), "isolation": result.isolation}
        print(json.dumps({**record, "stdout": result.stdout, "stderr": result.stderr}), flush=True)
finally:
    sibling.kill()
    sibling.wait()
