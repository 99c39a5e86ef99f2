"""What the warm launcher's tests run in place of ``prefect.engine``: reports where and
how it runs, then exits, fails or waits as its arguments say."""

import json
import os
import signal
import sys
import time

if __name__ == "__main__":
    command = sys.argv[1]

    def terminated(signum: int, _frame: object) -> None:
        print(f"got signal {signum}", flush=True)
        sys.exit(7)

    # Installed before the report: a test signals as soon as it reads that line.
    signal.signal(signal.SIGTERM, terminated)
    print(json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "argv": sys.argv,
        "env": os.environ.get("WARM_TEST_VALUE"), "path0": sys.path[0],
        "torch_loaded": "torch" in sys.modules,
    }), flush=True)  # fmt: skip
    print("to stderr", file=sys.stderr, flush=True)
    if command == "exit":
        sys.exit(int(sys.argv[2]))
    if command == "raise":
        raise RuntimeError("the run failed")
    if command == "wait":
        time.sleep(120)
