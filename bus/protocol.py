"""Frames of the service protocol (a small Majordomo: clients, hub broker, workers).

Client -> hub     [b"", CLIENT, service, request_id, timeout_ms, *message]
hub -> client     [b"", CLIENT, service, request_id, OK | ERROR, *message | error text]
worker -> hub     [b"", WORKER, READY, service] | [.., HEARTBEAT] | [.., DISCONNECT]
                  [b"", WORKER, REPLY, client_address, request_id, OK | ERROR, *message | text]
hub -> worker     [b"", WORKER, REQUEST, client_address, request_id, *message]
                  [b"", WORKER, HEARTBEAT] | [b"", WORKER, DISCONNECT]
`message` is a wire-format message (bus/wire.py). Heartbeats every second both ways; a peer
silent for three beats is dead.
"""

CLIENT = b"SB1C"
WORKER = b"SB1W"

READY = b"\x01"
REQUEST = b"\x02"
REPLY = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"

OK = b"ok"
ERROR = b"error"

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_LIVENESS = 3  # beats missed before a peer is declared dead
