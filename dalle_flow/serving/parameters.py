"""Checks on request Documents that no parameter declaration can express (parameters: dalle_flow/parameters.py)."""
from __future__ import annotations


def require_prompts(docs) -> None:
    """Every request Document must carry a prompt in `.text`, within the prompt length limit; the message says which
    one does not."""
    from dalle_flow.serving.limits import request_limits

    for i, doc in enumerate(docs):
        if not doc.text or not doc.text.strip():
            raise ValueError(f"docs[{i}].text: the prompt is empty; send Document(text='...')")
        request_limits().check_prompt(doc.text, f"docs[{i}].text")
