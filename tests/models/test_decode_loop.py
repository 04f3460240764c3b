"""The served DalleBart token loop (decode_loop.TokenLoop): the same tokens as the reference loop for the same random
numbers, and a step that torch.compile can trace as ONE graph (no graph break, hence no host read), giving the same
tokens compiled as eager. On a CUDA machine the loop also replays the step as a CUDA graph: compared there too."""
from __future__ import annotations

import pytest
import torch

from dalle_flow.models.dallebart.decode_loop import TokenLoop
from dalle_flow.models.dallebart import tiny_dallebart
from dalle_flow.models.dallebart.sampling import (SamplingSettings, _encode_prompts, generate_tokens, gumbel_noise,
                                                  sample_rows)
from tests.models.test_dallebart import SMALL, empty_prompt, prompt

SETTINGS = [SamplingSettings(10.0, 50, 0.9, 1.0), SamplingSettings(3.0, 7, 0.5, 0.7),
            SamplingSettings(1.0, 0, None, 1.3)]


def _cache(model, rows: int, guided: bool):
    text, empty = prompt(model), empty_prompt(model)
    hidden, mask = _encode_prompts(model, text, (text != 1).long(), empty, (empty != 1).long(), guided)
    return model.init_cache(hidden, mask, rows * (2 if guided else 1))


@pytest.fixture(scope="module")
def model():
    return tiny_dallebart("cpu", seed=5, **SMALL)


@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "tight", "unguided"])
def test_token_loop_matches_reference_loop(model, settings):
    """Rows 3 of a 4-row noise block, a codebook smaller than the model's: the reference loop given the same
    uniform numbers picks the same tokens at every step."""
    rows, noise_rows, codebook = 3, 4, 30
    guided = settings.cond_scale != 1.0
    loop = TokenLoop(model, _cache(model, rows, guided), rows, noise_rows, guided, settings, codebook)
    ours = loop.run(torch.Generator().manual_seed(7)).clone()
    g = torch.Generator().manual_seed(7)
    reference = sample_rows(model, _cache(model, rows, guided), rows, guided, settings,
                            lambda step, n, vocab: gumbel_noise((noise_rows, vocab), g, "cpu")[:n], codebook,
                            model.config.image_length, None)[:, 1:]
    assert ours.shape == (rows, model.config.image_length)
    assert torch.equal(ours, reference)
    assert int(ours.max()) < codebook
    # a second run of the same loop (a later batch) starts afresh
    assert torch.equal(loop.run(torch.Generator().manual_seed(7)), ours)


def test_static_step_compiles_as_one_graph_with_the_same_tokens(model):
    """The static step (what a GPU captures) traced by torch.compile with fullgraph=True, which fails on any graph
    break: a host read (.item(), a Python branch on a tensor) in the step would break it. Run for every token, it
    picks the eager loop's tokens."""
    torch._dynamo.reset()
    settings = SETTINGS[0]
    eager = TokenLoop(model, _cache(model, 2, True), 2, 2, True, settings, 40)
    expected = eager.run(torch.Generator().manual_seed(3)).clone()
    traced = TokenLoop(model, _cache(model, 2, True), 2, 2, True, settings, 40)
    static_step = torch.compile(traced.step, fullgraph=True, backend="aot_eager", dynamic=False)
    traced.step = lambda length: static_step()  # the captured form ignores the eager loop's host-side length
    assert torch.equal(traced.run(torch.Generator().manual_seed(3)), expected)


def test_capture_needs_cuda(model):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: capture is compared in test_cuda_graph_tokens_equal_eager")
    loop = TokenLoop(model, _cache(model, 1, True), 1, 1, True, SETTINGS[0], 40)
    with pytest.raises(ValueError, match="capture"):
        loop.run(torch.Generator(), capture=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_tokens_equal_eager():
    cuda = tiny_dallebart("cuda", seed=5, **SMALL)
    text, empty = prompt(cuda), empty_prompt(cuda)
    settings = dict(cond_scale=10.0, top_k=50, top_p=0.9, temperature=1.0, batch_size=2)
    eager = generate_tokens(cuda, text, empty, num_images=5, seed=9, capture=False, **settings)
    captured = generate_tokens(cuda, text, empty, num_images=5, seed=9, capture=True, **settings)
    assert torch.equal(eager, captured)
