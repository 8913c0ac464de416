"""Topic names. Topics are hierarchical: `<family>/<name>`; subscribers filter by prefix."""

FAMILIES = ("camera", "state", "action", "chunk", "health", "event")


def camera(name: str) -> str:
    return f"camera/{name}"


def state(arm: str) -> str:
    return f"state/{arm}"


def action(arm: str) -> str:
    return f"action/{arm}"


def chunk(task: str) -> str:
    return f"chunk/{task}"


def health(process: str) -> str:
    return f"health/{process}"


def event(kind: str) -> str:
    return f"event/{kind}"


def family(topic: str) -> str:
    return topic.split("/", 1)[0]
