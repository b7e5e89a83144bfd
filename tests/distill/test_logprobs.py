import pytest
import torch

from winnow.distill import logprobs
from winnow.distill.exceptions import DistillInputError
from winnow.distill.logprobs import token_log_probs

K, V, D = 37, 50, 8


def make_rows(rows=K, vocab=V, dtype=torch.float64, seed=0):
    """Hidden rows and an output weight that require grad, and a target token per row."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, D, generator=generator, dtype=torch.float64).to(dtype)
    weight = torch.randn(vocab, D, generator=generator, dtype=torch.float64).to(dtype)
    targets = torch.randint(vocab, (rows,), generator=generator)
    return hidden.requires_grad_(), weight.requires_grad_(), targets


def dense_reference(hidden, weight, targets, temperature=1.0):
    logits = hidden.double() @ weight.double().T / temperature
    return torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize(
    ("temperature", "chunk_size"), [(1.0, 1), (1.0, 5), (0.7, 37), (2.0, 8), (1.3, 64)]
)
def test_values_and_gradients_equal_dense_reference(temperature, chunk_size):
    hidden, weight, targets = make_rows()
    upstream = torch.rand(K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    chunked = token_log_probs(hidden, weight, targets, temperature, chunk_size)
    chunked_grads = torch.autograd.grad((chunked * upstream).sum(), (hidden, weight))
    dense = dense_reference(hidden, weight, targets, temperature)
    dense_grads = torch.autograd.grad((dense * upstream).sum(), (hidden, weight))

    assert chunked.shape == (K,) and chunked.dtype == torch.float64
    assert (chunked <= 0).all()
    torch.testing.assert_close(chunked, dense, rtol=1e-12, atol=1e-13)
    for got, want in zip(chunked_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    hidden, weight, targets = make_rows(rows=5, vocab=7)
    assert torch.autograd.gradcheck(
        lambda h, w: token_log_probs(h, w, targets, temperature=1.3, chunk_size=2), (hidden, weight)
    )


def test_no_rows_gives_empty_values_and_zero_gradients():
    hidden, weight, targets = make_rows(rows=0)
    values = token_log_probs(hidden, weight, targets)
    assert values.shape == (0,)
    values.sum().backward()
    assert hidden.grad.shape == (0, D)
    assert torch.equal(weight.grad, torch.zeros_like(weight))


def test_gradient_reaches_a_weight_tied_to_the_input_embedding():
    generator = torch.Generator().manual_seed(4)
    embedding = torch.randn(V, D, generator=generator, dtype=torch.float64)
    ids = torch.randint(V, (K,), generator=generator)
    targets = torch.randint(V, (K,), generator=generator)
    mixer = torch.randn(D, D, generator=generator, dtype=torch.float64)

    def embedding_grad(log_probs):
        tied = embedding.clone().requires_grad_()
        hidden = torch.tanh(tied[ids] @ mixer)  # the weight is both input embedding and head
        log_probs(hidden, tied).sum().backward()
        return tied.grad

    chunked = embedding_grad(lambda h, w: token_log_probs(h, w, targets, chunk_size=6))
    dense = embedding_grad(lambda h, w: dense_reference(h, w, targets))
    torch.testing.assert_close(chunked, dense)


def test_only_requested_gradients_are_computed():
    hidden, weight, targets = make_rows()
    frozen = weight.detach()
    token_log_probs(hidden, frozen, targets).sum().backward()
    assert hidden.grad is not None and frozen.grad is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_compute_in_float32_and_return_their_gradient_dtypes(dtype):
    hidden, weight, targets = make_rows(dtype=dtype)
    values = token_log_probs(hidden, weight, targets, chunk_size=10)
    assert values.dtype == torch.float32
    values.sum().backward()
    assert hidden.grad.dtype == dtype and weight.grad.dtype == dtype
    expected = dense_reference(hidden.float(), weight.float(), targets)
    torch.testing.assert_close(values.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"hidden": torch.zeros(K, D + 1)}, "hidden has width"),
        ({"hidden": torch.zeros(K, D, dtype=torch.long)}, "hidden must be a floating"),
        ({"weight": torch.zeros(V)}, "weight must be a floating"),
        ({"targets": torch.zeros(K)}, "targets must be a long"),
        ({"targets": torch.zeros(K - 1, dtype=torch.long)}, "targets must be a long"),
        ({"targets": torch.full((K,), V)}, r"targets must be token ids in \[0, 50\)"),
    ],
)
def test_invalid_inputs_raise_errors_naming_the_argument(override, match):
    hidden, weight, targets = make_rows(dtype=torch.float32)
    arguments = {"hidden": hidden, "weight": weight, "targets": targets} | override
    with pytest.raises(DistillInputError, match=match):
        token_log_probs(**arguments)


def test_exported_names_exist():
    for name in logprobs.__all__:
        assert hasattr(logprobs, name), name
