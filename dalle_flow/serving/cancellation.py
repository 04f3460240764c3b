"""Requests whose client has gone: the gateway names them, every executor remembers them, work stops between batches.

The gateway writes a fresh random key into every request's parameters (`REQUEST_KEY`; a client's own value is
replaced, so no client can name another's request). When a client disconnects before its answers came (gRPC call
cancelled, HTTP connection closed, WebSocket closed), the gateway posts the unanswered keys to `CANCEL_ENDPOINT` on
every replica of every executor (dalle_flow/deploy/gateway.py). The endpoint is asynchronous, so it runs while the
executor's synchronous work holds Jina's per-executor lock, and only records the keys here; the work itself stops at
its next check between batches (`limits.Deadline.check`), and a request still queued behind other work stops before
its first batch.

Memory stays bounded: the newest `REMEMBERED_CANCELLATIONS` keys are kept, older ones forgotten (a request waits in
an executor's queue far shorter than it takes that many cancellations to arrive).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

REQUEST_KEY = "_request_key"  # on a request: its key; on CANCEL_ENDPOINT: the keys to stop
CANCEL_ENDPOINT = "/_cancel"
REMEMBERED_CANCELLATIONS = 10_000


class CancelledRequests:
    """The keys of cancelled requests in this process, newest kept (thread-safe: the cancel endpoint runs on the event
    loop, the checks in the executor's worker thread)."""

    def __init__(self, capacity: int = REMEMBERED_CANCELLATIONS):
        self.capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, keys) -> int:
        """Remember a key or a list of keys (anything else is ignored); returns how many were added."""
        keys = [keys] if isinstance(keys, str) else keys if isinstance(keys, (list, tuple)) else []
        added = 0
        with self._lock:
            for key in keys:
                if isinstance(key, str) and key:
                    self._keys[key] = None
                    self._keys.move_to_end(key)
                    added += 1
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)
        return added

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._keys


CANCELLED = CancelledRequests()


def request_key(parameters) -> str | None:
    """The key the gateway gave this request, or None (a request that did not come through the gateway)."""
    key = parameters.get(REQUEST_KEY) if isinstance(parameters, dict) else None
    return key if isinstance(key, str) and key else None
