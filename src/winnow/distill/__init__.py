"""distill: on-policy distillation of LLMs, with TIP choosing the tokens that carry signal.

- :class:`OnPolicyDistiller`: the student samples its own responses, the teacher scores them
  token by token, and the loss runs only at the positions a selector keeps.
- :func:`token_divergence`: forward/reverse KL and generalized JSD from hidden states and the
  output-layer weight, chunked so no [tokens x vocabulary] tensor is ever held for backward.
- :func:`select_tokens` with :class:`SelectorConfig`: TIP's selectors (entropy, divergence,
  quadrants, soft-OR, type-aware) and the quadrant taxonomy.

Names import lazily so that ``winnow distill --help`` does not load torch.
"""

from importlib import import_module

__all__ = [
    "OnPolicyDistiller",
    "SelectorConfig",
    "TrainConfig",
    "select_tokens",
    "token_divergence",
    "token_statistics",
]

_HOMES = {
    "OnPolicyDistiller": "winnow.distill.trainer",
    "SelectorConfig": "winnow.distill.tokens",
    "TrainConfig": "winnow.distill.config",
    "select_tokens": "winnow.distill.tokens",
    "token_divergence": "winnow.distill.divergence",
    "token_statistics": "winnow.distill.tokens",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'winnow.distill' has no attribute {name!r}")
