"""CLIP-as-service instead of local CLIP (DALLE_FLOW_CLIP_SERVER): `rerank`, the Flow's one CLIP executor, forwards
to it what local CLIP does there (`/encode`, `/rank`, and the prompt embedding and ranking of candidates on `/`).

Why forwarders and not Jina `external: true` executors pointing at the service, as the original DALL·E Flow did:
with Jina 3.34 the gateway sends an external executor every endpoint under its own name. `uses_requests`
({'/': '/rank'}) is applied by an executor's own runtime, which an external one does not run here, so the external
`rerank` encoded the prompt and ranked nothing (tried: the candidates came back without scores); and
CLIP-as-service's catch-all `encode` would embed the images of /diffuse (which diffusion then reads as the prompt
embedding), /upscale and /segment. This forwarder sends exactly what local CLIP handles (`/`, `/encode`, `/rank`)
and nothing else. Images go out as inline PNG bytes, never as a URI: the service would fetch it.

The access token (api.clip.jina.ai needs one) comes from $DALLE_FLOW_CLIP_TOKEN at start-up, so it never lands in a
Flow YAML or a Kubernetes manifest.
"""

import os
from urllib.parse import urlsplit

from docarray import Document, DocumentArray
from jina import requests

from dalle_flow.serving.executor import FlowExecutor
from dalle_flow.serving.clip_protocol import clip_input, drop_image_content, refuse_unsupported_parameters
from dalle_flow.serving.images import encode_png
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, document_prompt, is_probe

TOKEN_ENV = "DALLE_FLOW_CLIP_TOKEN"
SCORES = ("clip_score", "clip_score_cosine")


def outgoing(doc, what: str, image_first: bool = False) -> Document:
    """What CLIP reads of a Document (serving.clip_protocol.clip_input): its text, or its inline image as PNG bytes
    (validated here)."""
    content = clip_input(doc, what, image_first)
    if isinstance(content, str):
        return Document(text=content)
    return Document(blob=encode_png(content), mime_type="image/png")


class ClipService(FlowExecutor):
    """`rerank` over CLIP-as-service: `/encode` and `/rank` passed on; on `/` the prompt's embedding and every
    candidate of a prompt ranked by its image, best first (matches keep no embedding)."""

    def __init__(self, server: str, batch_size: int = 8, **kwargs):
        super().__init__(**kwargs)
        from jina import Client

        self.server = server
        self.batch_size = batch_size
        self.client = Client(host=server, asyncio=True)
        token = os.environ.get(TOKEN_ENV)
        scheme = urlsplit(server).scheme
        # as clip_client sends it: gRPC metadata, or an HTTP header
        self.auth = {} if not token else (
            {"headers": {"Authorization": token}} if scheme.startswith("http") else
            {"metadata": (("authorization", token),)})

    async def _call(self, endpoint: str, docs: DocumentArray) -> DocumentArray:
        """Send `docs` (ids are their positions) and return the replies in the same order."""
        for i, doc in enumerate(docs):
            doc.id = str(i)
        replies = DocumentArray()
        try:
            async for part in self.client.post(endpoint, inputs=docs, request_size=self.batch_size,
                                               parameters={"drop_image_content": True}, **self.auth):
                replies.extend(part)
        except Exception as exc:  # a network or service failure: say where, the Flow itself keeps serving
            raise RuntimeError(f"CLIP-as-service at {self.server} ({endpoint}) failed: {exc}") from None
        by_id = {d.id: d for d in replies}
        missing = [d.id for d in docs if d.id not in by_id]
        if missing:
            raise RuntimeError(f"CLIP-as-service at {self.server} ({endpoint}) answered {len(by_id)} of "
                               f"{len(docs)} Documents")
        return DocumentArray(by_id[d.id] for d in docs)

    async def _embed(self, docs: DocumentArray):
        out = DocumentArray(outgoing(doc, f"docs[{i}]") for i, doc in enumerate(docs))
        for doc, reply in zip(docs, await self._call("/encode", out)):
            doc.embedding = reply.embedding

    async def _rank(self, docs: DocumentArray, queries: list, match_embeddings: bool,
                    candidates_image_first: bool = False):
        """Reorder each Document's matches best first with the service's scores (CLIP-as-service /rank) against
        `queries[i]` (what the service embeds as the query of docs[i]); each Document gets its query's embedding."""
        ranked = [(i, doc) for i, doc in enumerate(docs) if len(doc.matches)]
        out = DocumentArray()
        for i, doc in ranked:
            query = queries[i]
            query.matches = [outgoing(m, f"docs[{i}].matches[{j}]", candidates_image_first)
                             for j, m in enumerate(doc.matches)]
            for j, match in enumerate(query.matches):
                match.id = str(j)
            out.append(query)
        for (i, doc), reply in zip(ranked, await self._call("/rank", out)):
            originals = list(doc.matches)
            order = [int(m.id) for m in reply.matches]
            if sorted(order) != list(range(len(originals))):
                raise RuntimeError(f"CLIP-as-service at {self.server} (/rank) returned other matches than sent")
            for reply_match, j in zip(reply.matches, order):
                for name in SCORES:
                    if name in reply_match.scores:
                        originals[j].scores[name] = reply_match.scores[name]
                originals[j].embedding = reply_match.embedding if match_embeddings else None
            doc.matches = [originals[j] for j in order]
            doc.embedding = reply.embedding

    @requests(on="/")
    async def rank_candidates(self, docs: DocumentArray, **kwargs):
        if is_probe(docs):
            return
        # one /rank call: the prompt is the query, so its embedding comes back as the answer's `.embedding`
        prompts = [Document(text=document_prompt(doc, f"docs[{i}]")) for i, doc in enumerate(docs)]
        await self._rank(docs, prompts, match_embeddings=False, candidates_image_first=True)
        # a prompt without candidates (every generator toggled off for it) still gets its embedding, as locally
        unranked = [i for i, doc in enumerate(docs) if not len(doc.matches)]
        if unranked:
            embedded = DocumentArray(prompts[i] for i in unranked)
            await self._embed(embedded)
            for i, doc in zip(unranked, embedded):
                docs[i].embedding = doc.embedding

    @requests(on="/encode")
    async def encode(self, docs: DocumentArray, parameters: dict = None, **kwargs):
        refuse_unsupported_parameters(parameters)
        await self._embed(docs)
        drop_image_content(docs, parameters)

    @requests(on="/rank")
    async def rank(self, docs: DocumentArray, parameters: dict = None, **kwargs):
        refuse_unsupported_parameters(parameters)
        queries = [outgoing(doc, f"docs[{i}]") for i, doc in enumerate(docs)]
        await self._rank(docs, queries, match_embeddings=True)
        drop_image_content(docs, parameters, matches=True)

    @requests(on=PARAMETERS_ENDPOINT)
    async def merge_parameter_declarations(self, docs: DocumentArray, **kwargs):
        """As the local `rerank`: bound so that Jina merges both generators' declarations here."""
