"""so101-bus's message bus: wire format, hub, and the client API workers use.

Knows sockets and messages only; nothing here knows about robots, cameras or policies.
"""

from bus.client import ServiceClient, ServiceError, ServiceTimeout
from bus.config import BusConfig
from bus.publisher import Publisher
from bus.schema import SchemaError
from bus.subscriber import Subscriber
from bus.wire import Message, WireError
from bus.worker import Reply, RequestError, ServiceWorker

__all__ = [
    "BusConfig",
    "Message",
    "Publisher",
    "Reply",
    "RequestError",
    "SchemaError",
    "ServiceClient",
    "ServiceError",
    "ServiceTimeout",
    "ServiceWorker",
    "Subscriber",
    "WireError",
]
