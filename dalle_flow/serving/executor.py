"""The base of every executor in this Flow: Jina's `Executor` plus the cancellation endpoint the gateway posts to
when a client disconnects (serving/cancellation.py)."""

from jina import Executor, requests

from dalle_flow.serving.cancellation import CANCEL_ENDPOINT, CANCELLED, REQUEST_KEY


class FlowExecutor(Executor):
    # asynchronous: Jina runs it on the event loop while a synchronous endpoint's work holds the executor's lock
    @requests(on=CANCEL_ENDPOINT)
    async def cancel_requests(self, parameters: dict = None, **kwargs):
        CANCELLED.add((parameters or {}).get(REQUEST_KEY))
