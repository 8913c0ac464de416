"""The control loop worker: observations -> policy -> actions on time.

    uv run python -m workers.control --task=lift [--episodes=10] [--episode_s=20] [--fps=30]
        [--join=auto|inpaint|blend|latest] [--blend=weighted|average] [--schedule=ahead|sync]
        [--policy_workers=1] [--policy_timeout=1.5] [--bus.*]

Config, bus, loop, clean shutdown; the scheduling itself (ahead of time, chunk joins, holds)
is `ControlLoop` in workers/control/loop.py.
"""

from __future__ import annotations

import logging

from bus import Publisher, ServiceClient, Subscriber, topics
from workers import lifecycle
from workers.control.config import ControlConfig
from workers.control.loop import ControlLoop
from workers.tasks import get_task


def main() -> None:
    cfg = lifecycle.parse_or_exit(ControlConfig, "control")
    try:
        get_task(cfg.task)
        cfg.check()
    except ValueError as exc:
        lifecycle.exit_bad_config("control", exc)
    with lifecycle.Process(cfg.name) as proc:
        pub = proc.closing(Publisher(cfg.bus, cfg.name))
        client = proc.closing(ServiceClient(cfg.bus, cfg.name))
        sub = proc.closing(Subscriber(cfg.bus, ControlLoop.subscriptions(cfg), mode="latest"))
        loop = ControlLoop(cfg, proc.log, pub, sub, client)
        proc.health = loop.health
        # Episode markers must not fall into ZeroMQ's slow-joiner window.
        if not pub.wait_for_subscriber(topics.event("episode"), cfg.wait_for_listeners):
            proc.log.info(
                "no listener for event/episode after %.0f s; starting anyway",
                cfg.wait_for_listeners,
            )
        log_ready(proc.log, cfg, loop)
        episode = 0
        while not proc.stop.is_set() and (cfg.episodes == 0 or episode < cfg.episodes):
            loop.run_episode(proc.stop, episode)
            episode += 1
            proc.last_words = f"stopped after {episode} episode(s)"


def log_ready(log: logging.Logger, cfg: ControlConfig, loop: ControlLoop) -> None:
    prefix = "committed and soft prefix" if cfg.prefix_soft else "committed prefix only"
    join = {
        "auto": f"auto (inpaint if the policy accepts a committed prefix, else blend {cfg.blend})",
        "blend": f"blend ({cfg.blend})",
    }.get(cfg.join, cfg.join)
    if cfg.join in ("auto", "inpaint"):
        join += f", inpaint sends the {prefix}"
    log.info(
        "ready: task %s at %g Hz, schedule %s, join %s, policy %s x%d (timeout %.1f s), "
        "episodes %s of %.0f s",
        loop.task.name,
        cfg.fps,
        cfg.schedule,
        join,
        loop.service,
        cfg.policy_workers,
        cfg.policy_timeout,
        cfg.episodes or "unlimited",
        cfg.episode_s,
    )


if __name__ == "__main__":
    main()
