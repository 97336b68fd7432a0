"""``python -m anyedge``: the same as the ``anyedge`` command."""

from .cli.main import run

run()
