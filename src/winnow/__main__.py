"""``python -m winnow``: the CLI, also for launchers such as ``accelerate launch -m winnow``."""

from winnow.cli import app

app(prog_name="winnow")
