"""Checks on request Documents that no parameter declaration can express (parameters: dalle_flow/parameters.py), and
the `/parameters` endpoint's answer, which hands those declarations to clients."""
from __future__ import annotations


def require_prompts(docs) -> None:
    """Every request Document must carry a prompt in `.text`; the message says which one does not."""
    for i, doc in enumerate(docs):
        if not doc.text or not doc.text.strip():
            raise ValueError(f"docs[{i}].text: the prompt is empty; send Document(text='...')")


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
