"""An STS3215 servo bus on a pseudo-terminal, speaking Feetech protocol 0.

The slave side of the pty is a real serial device for pyserial, so lerobot's FeetechMotorsBus,
the servo driver and the servo process run unmodified against it. Implemented from the Feetech
STS memory map and protocol (not from lerobot's tables, so a mismatch would show):

    instruction  FF FF id len inst params... checksum     len = len(params) + 2
    status       FF FF id len error params... checksum    checksum = ~(id + len + ... ) & 0xFF

PING, READ, WRITE (one servo, answered), SYNC_READ (each listed servo answers in turn) and
SYNC_WRITE (broadcast, never answered). Servos move toward Goal_Position at `speed` steps/s while
torque is on; EEPROM writes are ignored while Lock is 1, as on the real servo.

Faults to inject: `corrupt_next(n)` (bad checksum on the next n answers), `silence_next(n)` (no
answer to the next n requests), `missing` (ids that never answer), `unplug()` / `replug()` (the
pty goes away and comes back behind the same `link` path, like a USB adapter).

Every SYNC_WRITE of Goal_Position is logged with its receive time (bus.clock.now()) in
`goal_writes`, for checks and for the goal-to-wire benchmark.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pty
import select
import threading
import tty
from collections import Counter, deque
from collections.abc import Iterable
from pathlib import Path

from bus import clock

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
ERR_INSTRUCTION = 0x40

# STS3215 memory map: name -> (address, bytes). Multi-byte values are little-endian.
REGISTERS = {
    "Firmware_Major_Version": (0, 1),
    "Firmware_Minor_Version": (1, 1),
    "Model_Number": (3, 2),
    "ID": (5, 1),
    "Baud_Rate": (6, 1),
    "Return_Delay_Time": (7, 1),
    "Response_Status_Level": (8, 1),
    "Min_Position_Limit": (9, 2),
    "Max_Position_Limit": (11, 2),
    "Max_Torque_Limit": (16, 2),
    "Phase": (18, 1),
    "P_Coefficient": (21, 1),
    "D_Coefficient": (22, 1),
    "I_Coefficient": (23, 1),
    "Protection_Current": (28, 2),
    "Homing_Offset": (31, 2),
    "Operating_Mode": (33, 1),
    "Overload_Torque": (36, 1),
    "Torque_Enable": (40, 1),
    "Acceleration": (41, 1),
    "Goal_Position": (42, 2),
    "Lock": (55, 1),
    "Present_Position": (56, 2),
    "Maximum_Acceleration": (85, 1),
}
SIGN_BITS = {"Goal_Position": 15, "Present_Position": 15, "Homing_Offset": 11}
EEPROM_END = 40  # addresses below this are EEPROM (write-protected by Lock)
MEMORY_SIZE = 128
MODEL_STS3215 = 777
FIRMWARE = (3, 10)


def checksum(body: bytes) -> int:
    return ~sum(body) & 0xFF


def packet(id_: int, code: int, params: bytes = b"") -> bytes:
    """An instruction (code = instruction) or status packet (code = error byte)."""
    body = bytes([id_, len(params) + 2, code]) + bytes(params)
    return HEADER + body + bytes([checksum(body)])


def _decode(name: str, raw: int) -> int:
    bit = SIGN_BITS.get(name)
    if bit is not None and raw & (1 << bit):
        return -(raw & ((1 << bit) - 1))
    return raw


def _encode(name: str, value: int) -> int:
    bit = SIGN_BITS.get(name)
    if bit is not None and value < 0:
        return -value | (1 << bit)
    return value


class Servo:
    """One STS3215: its memory and a position that follows Goal_Position."""

    def __init__(self, id_: int, position: int, speed: float):
        self.id = id_
        self.mem = bytearray(MEMORY_SIZE)
        self.position = float(position)
        self.speed = speed
        self._t = clock.now()
        self.set("Firmware_Major_Version", FIRMWARE[0])
        self.set("Firmware_Minor_Version", FIRMWARE[1])
        self.set("Model_Number", MODEL_STS3215)
        self.set("ID", id_)
        self.set("Response_Status_Level", 1)
        self.set("Max_Position_Limit", 4095)
        self.set("Max_Torque_Limit", 1000)
        self.set("P_Coefficient", 32)
        self.set("Return_Delay_Time", 250)
        self.set("Goal_Position", position)
        self.set("Lock", 1)
        self.locked_writes = 0

    def get(self, name: str) -> int:
        self._move()
        addr, size = REGISTERS[name]
        return _decode(name, int.from_bytes(self.mem[addr : addr + size], "little"))

    def set(self, name: str, value: int) -> None:
        addr, size = REGISTERS[name]
        self.mem[addr : addr + size] = _encode(name, int(value)).to_bytes(size, "little")

    def _move(self) -> None:
        now = clock.now()
        dt, self._t = now - self._t, now
        addr, size = REGISTERS["Torque_Enable"]
        if self.mem[addr]:
            goal_addr, _ = REGISTERS["Goal_Position"]
            goal = _decode(
                "Goal_Position", int.from_bytes(self.mem[goal_addr : goal_addr + 2], "little")
            )
            lo, hi = self.get_raw("Min_Position_Limit"), self.get_raw("Max_Position_Limit")
            goal = min(max(goal, lo), hi)  # the servo itself never drives past its limits
            step = self.speed * dt
            self.position += max(-step, min(step, goal - self.position))
        self.set("Present_Position", round(self.position))

    def get_raw(self, name: str) -> int:
        addr, size = REGISTERS[name]
        return int.from_bytes(self.mem[addr : addr + size], "little")

    def read(self, addr: int, size: int) -> bytes:
        self._move()
        return bytes(self.mem[addr : addr + size])

    def write(self, addr: int, data: bytes) -> None:
        self._move()
        if addr < EEPROM_END and self.mem[REGISTERS["Lock"][0]]:
            self.locked_writes += 1
            return
        self.mem[addr : addr + len(data)] = data


class FeetechEmulator:
    """A bus of STS3215 servos (ids 1-6 by default) served from a thread."""

    def __init__(
        self,
        ids: Iterable[int] = range(1, 7),
        link: str | Path | None = None,
        positions: dict[int, int] | None = None,
        speed: float = 4000.0,
    ):
        positions = positions or {}
        self.servos = {i: Servo(i, positions.get(i, 2048), speed) for i in ids}
        self.link = Path(link) if link else None
        self.missing: set[int] = set()
        self.counters: Counter[str] = Counter()
        self.goal_writes: deque[tuple[float, dict[int, int]]] = deque(maxlen=200_000)
        self._corrupt = 0
        self._silent = 0
        self._lock = threading.RLock()
        self._master = self._slave = -1
        self._slave_name = ""
        self._buffer = bytearray()
        self._want_plugged = True
        self._plug_changed = threading.Event()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="feetech-emulator", daemon=True)

    # -- control from the test ------------------------------------------------------------------
    @property
    def port(self) -> str:
        return str(self.link) if self.link else self._slave_name

    def start(self) -> FeetechEmulator:
        self._plug()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        self._unplug()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> FeetechEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def register(self, id_: int, name: str) -> int:
        with self._lock:
            return self.servos[id_].get(name)

    def set_register(self, id_: int, name: str, value: int) -> None:
        with self._lock:
            self.servos[id_].set(name, value)

    def corrupt_next(self, n: int = 1) -> None:
        with self._lock:
            self._corrupt += n

    def silence_next(self, n: int = 1) -> None:
        with self._lock:
            self._silent += n

    def faults_pending(self) -> int:
        with self._lock:
            return self._corrupt + self._silent

    def unplug(self) -> None:
        self._set_plugged(False)

    def replug(self) -> None:
        self._set_plugged(True)

    def _set_plugged(self, plugged: bool) -> None:
        # The serving thread owns the fds: it does the (un)plugging between two selects.
        self._plug_changed.clear()
        self._want_plugged = plugged
        os.write(self._wake_w, b"x")
        if not self._plug_changed.wait(5):
            raise RuntimeError("emulator thread did not change its plug state")

    # -- the pty ------------------------------------------------------------------------------
    def _plug(self) -> None:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: a byte pipe like a serial line
        self._slave_name = os.ttyname(self._slave)
        self._buffer.clear()
        if self.link:
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self._slave_name)
            tmp.replace(self.link)

    def _unplug(self) -> None:
        if self.link:
            self.link.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def _serve(self) -> None:
        while not self._stop.is_set():
            plugged = self._master >= 0
            if plugged != self._want_plugged:
                self._plug() if self._want_plugged else self._unplug()
                self._plug_changed.set()
                continue
            fds = [self._wake_r] + ([self._master] if plugged else [])
            ready, _, _ = select.select(fds, [], [], 0.5)
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            if plugged and self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    data = b""
                self._buffer += data
                self._handle_buffer()

    # -- the protocol -----------------------------------------------------------------------------
    def _handle_buffer(self) -> None:
        buf = self._buffer
        while True:
            start = buf.find(HEADER)
            if start < 0:
                del buf[: max(0, len(buf) - 1)]  # keep a trailing 0xFF: half a header
                return
            del buf[:start]
            if len(buf) < 4:
                return
            length = buf[3]
            if length < 2:
                del buf[:2]
                continue
            total = length + 4
            if len(buf) < total:
                return
            raw = bytes(buf[:total])
            del buf[:total]
            if checksum(raw[2:-1]) != raw[-1]:
                self.counters["bad_checksum"] += 1
                continue
            with self._lock:
                reply = self._execute(raw[2], raw[4], raw[5:-1])
                self._send(reply)

    def _servo(self, id_: int) -> Servo | None:
        return None if id_ in self.missing else self.servos.get(id_)

    def _execute(self, id_: int, inst: int, params: bytes) -> list[bytes]:
        self.counters["packets"] += 1
        if id_ == BROADCAST_ID:
            return self._broadcast(inst, params)
        servo = self._servo(id_)
        if servo is None:
            self.counters["to_missing"] += 1
            return []
        if inst == PING:
            return [packet(id_, 0)]
        if inst == READ and len(params) == 2:
            return [packet(id_, 0, servo.read(params[0], params[1]))]
        if inst == WRITE and len(params) >= 2:
            servo.write(params[0], params[1:])
            return [packet(id_, 0)]
        return [packet(id_, ERR_INSTRUCTION)]

    def _broadcast(self, inst: int, params: bytes) -> list[bytes]:
        if inst == SYNC_WRITE and len(params) >= 2:
            t = clock.now()
            addr, size = params[0], params[1]
            written = {}
            for k in range(2, len(params) - size, size + 1):
                servo = self._servo(params[k])
                if servo is not None:
                    data = params[k + 1 : k + 1 + size]
                    servo.write(addr, data)
                    written[servo.id] = int.from_bytes(data, "little")
            self.counters["sync_writes"] += 1
            if addr == REGISTERS["Goal_Position"][0]:
                self.goal_writes.append(
                    (t, {i: _decode("Goal_Position", v) for i, v in written.items()})
                )
            return []
        if inst == SYNC_READ and len(params) >= 2:
            addr, size = params[0], params[1]
            self.counters["sync_reads"] += 1
            servos = [self._servo(i) for i in params[2:]]
            return [packet(s.id, 0, s.read(addr, size)) for s in servos if s is not None]
        if inst == PING:
            return [packet(s.id, 0) for s in self.servos.values() if s.id not in self.missing]
        return []

    def _send(self, replies: list[bytes]) -> None:
        if not replies:
            return
        if self._silent:
            self._silent -= 1
            self.counters["silenced"] += 1
            return
        if self._corrupt:
            self._corrupt -= 1
            self.counters["corrupted"] += 1
            first = bytearray(replies[0])
            first[-1] ^= 0x5A
            replies = [bytes(first), *replies[1:]]
        try:
            os.write(self._master, b"".join(replies))
        except OSError:
            self.counters["write_errors"] += 1


# -- in a process of its own (benchmarks: keeps the emulator off the measuring process's GIL) ----
def _serve_process(links: list[str], positions: dict[int, int], conn) -> None:
    emulators = [FeetechEmulator(link=link, positions=positions).start() for link in links]
    conn.send("ready")
    while True:
        command = conn.recv()
        if command == "goal_writes":
            conn.send([list(e.goal_writes) for e in emulators])
        elif command == "counters":
            conn.send([dict(e.counters) for e in emulators])
        elif command == "stop":
            for e in emulators:
                e.stop()
            conn.send("stopped")
            return


class EmulatorProcess:
    """One emulated bus per link path, served by a separate (spawned) process."""

    def __init__(self, links: list[str | Path], positions: dict[int, int] | None = None):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve_process,
            args=([str(p) for p in links], positions or {}, child),
            daemon=True,
        )

    def __enter__(self) -> EmulatorProcess:
        self._proc.start()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            raise RuntimeError("emulator process did not start")
        return self

    def ask(self, command: str, timeout: float = 30.0):
        self._conn.send(command)
        if not self._conn.poll(timeout):
            raise RuntimeError(f"emulator process did not answer {command!r}")
        return self._conn.recv()

    def __exit__(self, *exc: object) -> None:
        try:
            self.ask("stop")
        finally:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
