"""Checks on request Documents that no parameter declaration can express (parameters: dalle_flow/parameters.py), and
the `/parameters` endpoint's answer, which hands those declarations to clients."""
from __future__ import annotations

from dalle_flow.serving.limits import request_limits


def require_prompts(docs) -> None:
    """Every request Document must carry a prompt in `.text`, within the prompt length limit; the message says which
    one does not."""
    for i, doc in enumerate(docs):
        if not doc.text or not doc.text.strip():
            raise ValueError(f"docs[{i}].text: the prompt is empty; send Document(text='...')")
        request_limits().check_prompt(doc.text, f"docs[{i}].text")


def document_prompt(doc, what: str, hint: str = "the prompt is empty; send the prompt in .text (or tags['text'])"):
    """The prompt of a Document that carries an image: `.text`, else its `text` tag. DocArray v1 keeps one content
    per Document, so an image in `.blob` or `.tensor` cannot have a `.text` beside it; every generated image carries
    its prompt in both."""
    prompt = doc.text or doc.tags.get("text")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{what}.text: {hint}")
    request_limits().check_prompt(prompt, f"{what}.text")
    return prompt


def is_probe(docs) -> bool:
    """A request of empty Documents only, as `jina.Client.profiling()` and `clip_client.Client.profile()` send to `/`:
    a health and latency probe, answered unchanged by every executor instead of refused for its missing prompt."""
    return len(docs) > 0 and all(_is_empty(doc) for doc in docs)


def _is_empty(doc) -> bool:
    return not doc.text and not doc.blob and doc.tensor is None and not doc.uri and doc.embedding is None \
        and not len(doc.matches) and not len(doc.chunks)


# Every executor with request parameters answers this endpoint with one Document describing them: clients (the web
# UI) read the running server's defaults and ranges from there instead of restating them
PARAMETERS_ENDPOINT = "/parameters"


def declare_parameters(docs, executor_name: str, endpoints: dict) -> None:
    """Append the Document that answers PARAMETERS_ENDPOINT for one executor: tags `executor` and `endpoints`
    (endpoint -> [Param.declaration()] of the `Params` it parses there). Its id is unique per executor, so the
    answers of parallel branches merge."""
    from docarray import Document

    docs.append(Document(id=f"{PARAMETERS_ENDPOINT}/{executor_name}", tags={
        "executor": executor_name,
        "endpoints": {endpoint: [spec.declaration() for spec in params.specs]
                      for endpoint, params in endpoints.items()}}))
