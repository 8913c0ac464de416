"""A test service worker in its own process: echoes arrays back, optionally slowly or failing.

python tests/echo_worker.py --service echo --delay 0.5 --fail-on boom <bus args>
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from bus import BusConfig, Message, Reply, RequestError, ServiceWorker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", default="echo")
    parser.add_argument("--delay", type=float, default=0.0)
    for name in ("pub", "sub", "client", "worker"):
        parser.add_argument(f"--bus.{name}", dest=name, required=True)
    parser.add_argument("--bus.max_msg_bytes", dest="max_msg_bytes", type=int, default=16 << 20)
    parser.add_argument("--bus.keys_dir", dest="keys_dir", default=None)
    args = parser.parse_args()
    cfg = BusConfig(args.pub, args.sub, args.client, args.worker, args.max_msg_bytes, args.keys_dir)

    def handle(request: Message) -> Reply:
        if request.data.get("fail"):
            raise RequestError(f"asked to fail: {request.data['fail']}")
        delay = float(request.data.get("delay", args.delay))
        if delay:
            time.sleep(delay)
        return Reply(dict(request.arrays), {"pid": os.getpid(), "echo": request.data})

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = ServiceWorker(cfg, args.service, handle, source=f"echo-{os.getpid()}")
    print(f"ready: {args.service} pid {os.getpid()}", flush=True)
    worker.run(stop)


if __name__ == "__main__":
    main()
