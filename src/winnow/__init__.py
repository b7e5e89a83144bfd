"""winnow: spend compute where the signal is.

Four capabilities share one package and nothing else: ``winnow.distill`` (on-policy
distillation), ``winnow.route`` (batch LLM routing), ``winnow.search`` (distilled ranking) and
``winnow.explain`` (trustworthy statistics for black-box models). ``winnow.common`` holds what
they share: configs, run folders, data resolution and progress display.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("winnow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
