import math
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from winnow.distill.divergence import (
    DIVERGENCES,
    dense_divergence,
    generalized_jsd,
    head_log_probs,
    token_divergence,
)
from winnow.distill.exceptions import DistillInputError

K, V, D_STUDENT, D_TEACHER = 37, 50, 8, 6


def make_rows(rows=K, vocab=V, dtype=torch.float64, seed=0):
    """Student and teacher hidden rows and output weights; student inputs require grad."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    student_hidden = randn(rows, D_STUDENT).requires_grad_()
    student_weight = randn(vocab, D_STUDENT).requires_grad_()
    return student_hidden, student_weight, randn(rows, D_TEACHER), randn(vocab, D_TEACHER)


def dense_reference(student_hidden, student_weight, teacher_hidden, teacher_weight, **settings):
    return dense_divergence(
        student_hidden @ student_weight.T, teacher_hidden @ teacher_weight.T, **settings
    )


CASES = [  # kind, beta, temperature, chunk_size: chunks of 1, dividing K, not dividing, above K
    ("forward_kl", 0.5, 1.0, 5),
    ("forward_kl", 0.5, 2.0, 37),
    ("reverse_kl", 0.5, 0.7, 8),
    ("reverse_kl", 0.5, 1.0, 1),
    ("jsd", 0.0, 1.0, 10),
    ("jsd", 0.1, 1.0, 64),
    ("jsd", 0.5, 2.0, 5),
    ("jsd", 0.9, 0.5, 36),
    ("jsd", 1.0, 1.5, 10),
]


@pytest.mark.parametrize(("kind", "beta", "temperature", "chunk_size"), CASES)
def test_chunked_values_and_gradients_equal_dense_reference(kind, beta, temperature, chunk_size):
    inputs = make_rows()
    settings = {"kind": kind, "beta": beta, "temperature": temperature}
    upstream = torch.rand(K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    chunked = token_divergence(*inputs, **settings, chunk_size=chunk_size)
    chunked_grads = torch.autograd.grad((chunked * upstream).sum(), inputs[:2])
    dense = dense_reference(*inputs, **settings)
    dense_grads = torch.autograd.grad((dense * upstream).sum(), inputs[:2])

    assert chunked.shape == (K,) and chunked.dtype == torch.float64
    torch.testing.assert_close(chunked, dense, rtol=1e-12, atol=1e-13)
    for got, want in zip(chunked_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(DIVERGENCES))
def test_gradcheck(kind):
    student_hidden, student_weight, teacher_hidden, teacher_weight = make_rows(rows=5, vocab=7)

    def divergence(hidden, weight):
        return token_divergence(
            hidden, weight, teacher_hidden, teacher_weight, kind, 0.3, 1.3, chunk_size=2
        )

    assert torch.autograd.gradcheck(divergence, (student_hidden, student_weight))


def test_forward_kl_gradient_is_p_minus_q_over_temperature():
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(K, V, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(K, V, generator=generator, dtype=torch.float64)
    for temperature in (1.0, 2.5):
        (grad,) = torch.autograd.grad(
            dense_divergence(student, teacher, "forward_kl", temperature=temperature).sum(),
            student,
        )
        p, q = (torch.softmax(logits / temperature, -1) for logits in (student, teacher))
        torch.testing.assert_close(grad, (p - q).detach() / temperature)


def test_closed_forms_on_two_token_distributions():
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    student, teacher = p.log(), q.log()  # logits of which these are the softmax
    forward = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    m = 0.5 * (p + q)
    jsd = 0.5 * (q * (q / m).log()).sum() + 0.5 * (p * (p / m).log()).sum()
    assert dense_divergence(student, teacher, "forward_kl").item() == pytest.approx(forward)
    assert dense_divergence(student, teacher, "reverse_kl").item() == pytest.approx(reverse)
    assert dense_divergence(student, teacher, "jsd", beta=0.5).item() == pytest.approx(jsd.item())


def test_divergence_invariants():
    generator = torch.Generator().manual_seed(3)
    student, teacher = (
        torch.log_softmax(torch.randn(K, V, generator=generator, dtype=torch.float64), -1)
        for _ in range(2)
    )
    for name, divergence in DIVERGENCES.items():
        values = divergence(student, teacher, 0.3)
        assert (values > 0).all(), name
        torch.testing.assert_close(divergence(student, student, 0.3), torch.zeros(K).double())
    for beta in (0.2, 0.5, 0.7):
        torch.testing.assert_close(
            generalized_jsd(student, teacher, beta), generalized_jsd(teacher, student, 1 - beta)
        )
    assert (generalized_jsd(student, teacher, 0.5) <= math.log(2)).all()
    torch.testing.assert_close(
        generalized_jsd(student, teacher, 0), DIVERGENCES["forward_kl"](student, teacher, 0)
    )
    torch.testing.assert_close(
        generalized_jsd(student, teacher, 1), DIVERGENCES["reverse_kl"](student, teacher, 1)
    )


@pytest.fixture(scope="module")
def trl_generalized_jsd():
    pytest.importorskip("trl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.gkd import GKDTrainer
    return GKDTrainer.generalized_jsd_loss


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_equals_trl_generalized_jsd_loss_per_token(trl_generalized_jsd, beta):
    inputs = make_rows()
    student_logits = (inputs[0] @ inputs[1].T).detach()
    teacher_logits = inputs[2] @ inputs[3].T
    trl = trl_generalized_jsd(
        student_logits[None], teacher_logits[None], beta=beta, temperature=1.5, reduction="none"
    ).sum(-1)[0]
    ours = token_divergence(*inputs, "jsd", beta=beta, temperature=1.5, chunk_size=10)
    torch.testing.assert_close(ours.detach(), trl, rtol=1e-10, atol=1e-12)


def test_no_rows_gives_empty_values_and_zero_gradients():
    student_hidden, student_weight, teacher_hidden, teacher_weight = make_rows(rows=0)
    values = token_divergence(student_hidden, student_weight, teacher_hidden, teacher_weight)
    assert values.shape == (0,)
    values.sum().backward()
    assert student_hidden.grad.shape == (0, D_STUDENT)
    assert torch.equal(student_weight.grad, torch.zeros_like(student_weight))


def test_teacher_is_a_constant_even_when_it_shares_the_student_weight():
    student_hidden, student_weight, teacher_hidden, _ = make_rows()
    teacher_hidden = torch.randn(K, D_STUDENT, dtype=torch.float64, requires_grad=True)
    values = token_divergence(student_hidden, student_weight, teacher_hidden, student_weight, "jsd")
    values.sum().backward()
    reference_weight = student_weight.detach().clone().requires_grad_()
    dense = dense_divergence(
        student_hidden.detach() @ reference_weight.T,
        teacher_hidden @ student_weight.T,
        "jsd",
    )
    dense.sum().backward()
    assert teacher_hidden.grad is None
    torch.testing.assert_close(student_weight.grad, reference_weight.grad)


def test_gradient_reaches_a_weight_tied_to_the_input_embedding():
    generator = torch.Generator().manual_seed(4)
    embedding = torch.randn(V, D_STUDENT, generator=generator, dtype=torch.float64)
    ids = torch.randint(V, (K,), generator=generator)
    mixer = torch.randn(D_STUDENT, D_STUDENT, generator=generator, dtype=torch.float64)
    teacher_hidden = torch.randn(K, D_TEACHER, generator=generator, dtype=torch.float64)
    teacher_weight = torch.randn(V, D_TEACHER, generator=generator, dtype=torch.float64)

    def embedding_grad(divergence):
        tied = embedding.clone().requires_grad_()
        hidden = torch.tanh(tied[ids] @ mixer)  # the weight is both input embedding and head
        divergence(hidden, tied).sum().backward()
        return tied.grad

    chunked = embedding_grad(
        lambda h, w: token_divergence(h, w, teacher_hidden, teacher_weight, chunk_size=6)
    )
    dense = embedding_grad(lambda h, w: dense_reference(h, w, teacher_hidden, teacher_weight))
    torch.testing.assert_close(chunked, dense)


def test_only_requested_gradients_are_computed():
    student_hidden, student_weight, teacher_hidden, teacher_weight = make_rows()
    frozen_weight = student_weight.detach()
    token_divergence(student_hidden, frozen_weight, teacher_hidden, teacher_weight).sum().backward()
    assert student_hidden.grad is not None and frozen_weight.grad is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_compute_in_float32_and_return_their_gradient_dtypes(dtype):
    inputs = make_rows(dtype=dtype)
    values = token_divergence(*inputs, "reverse_kl", chunk_size=10)
    values.sum().backward()
    assert values.dtype == torch.float32
    assert inputs[0].grad.dtype == dtype and inputs[1].grad.dtype == dtype
    upcast = [tensor.detach().double().requires_grad_() for tensor in inputs]
    reference = token_divergence(*upcast, "reverse_kl", chunk_size=10)
    reference.sum().backward()
    torch.testing.assert_close(values, reference.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(inputs[1].grad.double(), upcast[1].grad, rtol=2e-2, atol=1e-2)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns while active."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.numel = max(self.numel, tensor.numel())
        return out


def test_memory_no_rows_by_vocabulary_tensor_is_saved_or_allocated():
    rows, vocab, chunk_size = 512, 2000, 64
    inputs = make_rows(rows=rows, vocab=vocab, dtype=torch.float32)

    def saved_bytes_and_backward_peak(divergence):
        saved = []

        def pack(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            values = divergence()
        largest = LargestTensor()
        with largest:
            values.sum().backward()
        return sum(saved), largest.numel

    chunked_saved, chunked_peak = saved_bytes_and_backward_peak(
        lambda: token_divergence(*inputs, "jsd", chunk_size=chunk_size)
    )
    dense_saved, dense_peak = saved_bytes_and_backward_peak(
        lambda: dense_reference(*inputs, kind="jsd")
    )
    full_logits_bytes = rows * vocab * 4
    inputs_bytes = 4 * (rows + vocab) * (D_STUDENT + D_TEACHER)  # saved: the inputs, nothing else
    assert chunked_saved == inputs_bytes < full_logits_bytes / 20
    assert dense_saved >= full_logits_bytes
    assert chunked_peak <= chunk_size * vocab < rows * vocab == dense_peak


def test_head_log_probs_are_normalised_in_float32_for_bfloat16():
    hidden, weight, _, _ = make_rows(dtype=torch.bfloat16)
    logp = head_log_probs(hidden, weight, temperature=0.8)
    assert logp.dtype == torch.float32 and logp.shape == (K, V)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(K))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"kind": "kl"}, "kind must be one of"),
        ({"beta": 1.5}, "beta must be a number in"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"chunk_size": 0}, "chunk_size must be an int >= 1"),
        ({"teacher_hidden": torch.zeros(K - 1, D_TEACHER)}, "teacher_hidden has 36"),
        ({"teacher_weight": torch.zeros(V + 1, D_TEACHER)}, "teacher_weight covers 51"),
        ({"student_weight": torch.zeros(V, D_STUDENT + 1)}, "student_hidden has width 8"),
        ({"student_hidden": torch.zeros(K, dtype=torch.float64)}, "student_hidden must be"),
        ({"teacher_hidden": torch.zeros(K, D_TEACHER, dtype=torch.long)}, "floating tensor"),
    ],
)
def test_invalid_inputs_raise_errors_naming_the_argument(override, match):
    student_hidden, student_weight, teacher_hidden, teacher_weight = make_rows()
    arguments = {
        "student_hidden": student_hidden,
        "student_weight": student_weight,
        "teacher_hidden": teacher_hidden,
        "teacher_weight": teacher_weight,
        **override,
    }
    with pytest.raises(DistillInputError, match=match):
        token_divergence(**arguments)


def test_dense_divergence_rejects_mismatched_logits():
    with pytest.raises(DistillInputError, match="same shape"):
        dense_divergence(torch.zeros(3, V), torch.zeros(3, V + 1))
