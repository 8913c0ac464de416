"""Recorder benchmark: three 480x640 cameras at 30 fps plus two arms, through the hub, recorded.

    uv run python -m bench.recorder [--episodes 6] [--seconds 10] [--vcodec h264]
        [--preset superfast] [--max_backlog_mb 1024] [--keep DIR]

A load process publishes `--episodes` episodes of `--seconds` each (event/episode markers,
camera/front, camera/left_wrist, camera/right_wrist at 30 Hz with real frames from
datasets/sort, state/left_arm and state/right_arm at 30 Hz, stamped with their scheduled
capture times as a camera stamps its frames, however late the load gets to send them) into a
hub; the recorder runs as
its own process (`python -m workers.recorder --task=sort --action=state`), exactly as deployed.
Measured: camera frames published / received by the recorder / written to the dataset, what
the alignment dropped or repeated, the video encoders' real-time factor, the recorder's peak
memory (VmHWM) and CPU, the backlog's maximum, and how long after each episode's end it was
committed. `dropped` = camera frames published inside episodes that are not in the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, emit, hub_process, ipc_bus, spawn, table
from bus import BusConfig, Publisher, Subscriber
from bus.clock import now

CAMERAS = ("front", "left_wrist", "right_wrist")
ARMS = ("left_arm", "right_arm")
FPS = 30
SOURCE_FRAMES = 60  # per camera, played forwards then backwards


def source_frames() -> dict[str, list[np.ndarray]]:
    import av

    out = {}
    for cam in CAMERAS:
        path = (
            REPO
            / "datasets"
            / "sort"
            / "videos"
            / f"observation.images.{cam}"
            / "chunk-000"
            / "file-000.mp4"
        )
        frames = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
                if len(frames) == SOURCE_FRAMES:
                    break
        out[cam] = frames + frames[-2:0:-1]
    return out


def load(cfg: BusConfig, episodes: int, seconds: float, out) -> None:
    """The publishing side: cameras and arms on a monotonic 30 Hz schedule, in episodes."""
    frames = source_frames()
    cycle = len(frames[CAMERAS[0]])
    pub = Publisher(cfg, "bench-load")
    pub.wait_for_subscriber("event/episode", 60)
    time.sleep(0.5)  # the recorder's camera/state subscriptions travel with its first one
    names = [
        f"{j}.pos"
        for j in (
            "shoulder_pan",
            "shoulder_lift",
            "elbow_flex",
            "wrist_flex",
            "wrist_roll",
            "gripper",
        )
    ]
    sent = {"frames": 0, "states": 0, "late_ticks": 0, "max_lag_ms": 0.0}
    period = 1.0 / FPS
    n = int(round(seconds * FPS))
    for ep in range(episodes):
        pub.publish(
            "event/episode",
            data={"phase": "start", "episode": ep, "task": "sort", "source": "bench"},
        )
        time.sleep(0.02)  # the first capture comes after the start marker
        t0, t_bus0 = time.monotonic(), now()
        for k in range(n):
            due = t0 + k * period
            # Capture times as a camera stamps them (its frame clock), however late this
            # process gets to publish: cameras a few ms out of phase, never in the future.
            t_cap = t_bus0 + k * period
            while (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            lag = time.monotonic() - due
            if lag > period:
                sent["late_ticks"] += 1
            sent["max_lag_ms"] = max(sent["max_lag_ms"], lag * 1000)
            i = (ep * n + k) % cycle
            for c, cam in enumerate(CAMERAS):
                pub.publish(
                    f"camera/{cam}",
                    {"image": frames[cam][i]},
                    {"frame": k, "episode": ep},
                    t_cap=t_cap - 0.003 * c,
                )
                sent["frames"] += 1
            for a, arm in enumerate(ARMS):
                pos = np.full(6, np.sin(k / 20) * 30 + a, np.float32)
                pub.publish(
                    f"state/{arm}", {"position": pos}, {"names": names}, t_cap=t_cap - 0.001
                )
                sent["states"] += 1
        pub.publish(
            "event/episode",
            data={"phase": "stop", "episode": ep, "task": "sort", "source": "bench"},
        )
    pub.close()
    out.put(sent)


def status(pid: int) -> dict[str, float]:
    fields = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read().rsplit(")", 1)[1].split()
    fields["cpu_s"] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--vcodec", default="h264", help="h264, hevc, libsvtav1 (lerobot's)")
    parser.add_argument("--preset", default="superfast", help="the codec's speed preset")
    parser.add_argument("--max_backlog_mb", type=float, default=1024.0)
    parser.add_argument("--keep", type=Path, help="record here and keep the dataset")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-recorder-"))
    root = (args.keep or workdir / "sort").absolute()
    log_path = workdir / "recorder.log"
    print(
        f"{args.episodes} episodes x {args.seconds:.0f} s: {len(CAMERAS)} cameras 480x640 @ "
        f"{FPS} Hz + {len(ARMS)} arms; {args.vcodec} preset {args.preset}; recorder log "
        f"{log_path}",
        flush=True,
    )
    with ipc_bus() as cfg, hub_process(cfg), open(log_path, "wb") as log_fh:
        rec = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.recorder",
                f"--root={root}",
                "--task=sort",
                "--action=state",
                f"--vcodec={args.vcodec}",
                f"--preset={args.preset}",
                f"--max_backlog_mb={args.max_backlog_mb}",
                *[f"--bus.{k}={v}" for k, v in cfg.endpoints().items()],
            ],
            cwd=REPO,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 120
            while b"ready:" not in log_path.read_bytes():
                if rec.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"recorder did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
            result = run(cfg, rec, args)
        finally:
            if rec.poll() is None:
                rec.send_signal(signal.SIGTERM)
                rec.wait(300)
    report(root, result, args, log_path)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)  # the log stays for a look


def run(cfg: BusConfig, rec: subprocess.Popen, args) -> dict:
    health = Subscriber(cfg, ["health/recorder"])
    out = spawn().Queue()
    loader = spawn().Process(target=load, args=(cfg, args.episodes, args.seconds, out))
    cpu0, t0 = status(rec.pid)["cpu_s"], time.monotonic()
    loader.start()
    peak_backlog_mb = 0.0
    last: dict = {}

    def poll(timeout: float = 0.5) -> None:
        nonlocal peak_backlog_mb, last
        msg = health.latest(timeout).get("health/recorder")
        if msg is not None:
            last = msg.data
            peak_backlog_mb = max(peak_backlog_mb, last["backlog_max_mb"])

    while loader.is_alive():
        poll()
    sent = out.get(timeout=60)
    loader.join()
    t_published = time.monotonic()
    deadline = t_published + 600
    while time.monotonic() < deadline:  # everything published is saved (or refused)
        poll()
        done = (
            last.get("episodes_saved", 0)
            + last.get("episodes_discarded", 0)
            + last.get("episodes_refused", 0)
        )
        if (
            done >= args.episodes
            and not last.get("backlog_frames")
            and not last.get("episodes_queued")
            and not last.get("recording")
        ):
            break
    drain_s = time.monotonic() - t_published
    st = status(rec.pid)
    wall = time.monotonic() - t0
    rec.send_signal(signal.SIGTERM)
    rec.wait(300)
    health.close()
    return {
        "sent": sent,
        "health": last,
        "peak_backlog_mb": peak_backlog_mb,
        "peak_rss_mb": st["VmHWM"],
        "cpu_cores": (st["cpu_s"] - cpu0) / wall,
        "drain_s": drain_s,
    }


def report(root: Path, r: dict, args, log_path: Path) -> None:
    sent, health = r["sent"], r["health"]
    info = json.loads((root / "meta" / "info.json").read_text()) if root.exists() else {}
    reports = (
        [
            json.loads(p.read_text())
            for p in sorted((root / "meta" / "recorder").glob("episode_*.json"))
        ]
        if root.exists()
        else []
    )
    cams = [f"camera/{c}" for c in CAMERAS]
    frames_written = int(info.get("total_frames", 0)) * len(CAMERAS)
    received = sum(health.get("samples", {}).get(c, 0) for c in cams)
    dup = sum(rep["streams"][c]["duplicated"] for rep in reports for c in cams)
    align_drop = sum(rep["streams"][c]["dropped"] for rep in reports for c in cams)
    late = sum(rep["streams"][c]["late"] for rep in reports for c in cams)
    busy = sum(rep["encode"]["busy_s"] for rep in reports)
    video_s = sum(rep["encode"]["frames"] for rep in reports) / FPS
    rtf = video_s / busy if busy else float("nan")
    dropped = sent["frames"] - (frames_written - dup)
    size_mb = (
        sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
        if root.exists()
        else 0.0
    )
    # Seconds from an episode's last frame to its files being written (then committed).
    commit_lag = [round(rep["written_at"] - rep["t0"] - rep["duration_s"], 2) for rep in reports]

    table(
        "frames (camera frames, all three cameras)",
        ["stage", "count"],
        [
            ["published inside episodes", sent["frames"]],
            ["received by the recorder", received],
            ["lost on the bus (sequence gaps)", health.get("lost", 0)],
            ["dropped by the alignment (several in one frame)", align_drop],
            ["repeated by the alignment (none new in a frame)", dup],
            ["late (after their frame was written)", late],
            ["written to the dataset", frames_written],
            ["dropped (published, not in the dataset)", dropped],
        ],
    )
    table(
        "per episode",
        ["episode", "frames", "achieved fps", "encode x real time", "encoder waits", "save lag s"],
        [
            [
                rep["episode_index"],
                rep["frames"],
                rep["achieved_fps"],
                rep["encode"]["realtime_factor"],
                rep["encode"]["waits"],
                lag,
            ]
            for rep, lag in zip(reports, commit_lag, strict=True)
        ],
    )
    table(
        "recorder process",
        ["metric", "value"],
        [
            [
                "episodes saved / refused / truncated",
                f"{health.get('episodes_saved')} / "
                f"{health.get('episodes_refused')} / {health.get('episodes_truncated')}",
            ],
            ["encode real-time factor (per camera encoder)", rtf],
            ["backlog max (MB)", r["peak_backlog_mb"]],
            ["backlog limit (MB)", args.max_backlog_mb],
            ["peak RSS (MB)", r["peak_rss_mb"]],
            ["CPU (cores, while publishing and saving)", r["cpu_cores"]],
            ["all saved, s after the last frame", r["drain_s"]],
            ["save lag max (s from an episode's end)", max(commit_lag, default=float("nan"))],
            ["load: frames sent > 1 frame after capture", sent["late_ticks"]],
            ["load: latest send after capture (ms)", sent["max_lag_ms"]],
            ["dataset size (MB)", size_mb],
        ],
    )
    emit(
        {
            "frames_published": sent["frames"],
            "frames_received": received,
            "frames_written": frames_written,
            "dropped": dropped,
            "bus_lost": health.get("lost", 0),
            "align_dropped": align_drop,
            "align_duplicated": dup,
            "encode_realtime_factor": rtf,
            "peak_rss_mb": r["peak_rss_mb"],
            "backlog_max_mb": r["peak_backlog_mb"],
            "episodes_saved": health.get("episodes_saved"),
            "recorder_cpu_cores": r["cpu_cores"],
            "save_lag_max_s": max(commit_lag, default=None),
            "vcodec": args.vcodec,
            "preset": args.preset,
        }
    )


if __name__ == "__main__":
    main()
