"""CurveZMQ keys for a hub that listens beyond loopback.

    uv run python -m bus.keys generate keys/ --clients laptop gpu-box

writes keys/hub.key(_secret), keys/clients/<name>.key(_secret) and copies each client's public
key into keys/authorized/, the hub's allow-list. Give a remote peer `hub.key` and its own
`clients/<name>.key_secret`; remove a file from authorized/ to revoke it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import zmq
import zmq.auth


class CurveKeyError(RuntimeError):
    """Keys missing or unreadable; the message says which file."""


def generate(keys_dir: str | Path, clients: list[str]) -> None:
    root = Path(keys_dir)
    (root / "clients").mkdir(parents=True, exist_ok=True)
    (root / "authorized").mkdir(exist_ok=True)
    if not (root / "hub.key_secret").exists():
        zmq.auth.create_certificates(root, "hub")
    for name in clients:
        if not (root / "clients" / f"{name}.key_secret").exists():
            zmq.auth.create_certificates(root / "clients", name)
        shutil.copy(root / "clients" / f"{name}.key", root / "authorized" / f"{name}.key")


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise CurveKeyError(
            f"CurveZMQ key file {path} not found (make keys: python -m bus.keys generate)"
        )
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except Exception as exc:
        raise CurveKeyError(f"CurveZMQ key file {path} is unreadable: {exc}") from exc
    if secret and secret_key is None:
        raise CurveKeyError(f"{path} holds no secret key")
    return public, secret_key


def hub_keys(keys_dir: str | Path) -> tuple[bytes, bytes]:
    public, secret = _load(Path(keys_dir) / "hub.key_secret", secret=True)
    return public, secret  # type: ignore[return-value]


def hub_public(keys_dir: str | Path) -> bytes:
    return _load(Path(keys_dir) / "hub.key", secret=False)[0]


def client_keys(keys_dir: str | Path, name: str) -> tuple[bytes, bytes]:
    public, secret = _load(Path(keys_dir) / "clients" / f"{name}.key_secret", secret=True)
    return public, secret  # type: ignore[return-value]


def apply_client(sock: zmq.Socket, keys_dir: str | Path, name: str) -> None:
    public, secret = client_keys(keys_dir, name)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = hub_public(keys_dir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="create hub and client keys (existing keys are kept)")
    gen.add_argument("keys_dir")
    gen.add_argument("--clients", nargs="+", default=["client"])
    args = parser.parse_args()
    generate(args.keys_dir, args.clients)
    names = ", ".join(args.clients)
    print(f"keys in {args.keys_dir}: hub.key (give to clients), clients/, authorized/ ({names})")


if __name__ == "__main__":
    main()
