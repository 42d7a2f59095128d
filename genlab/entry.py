"""The ``genlab-train`` command: the stop at SIGTERM and Ctrl-C (``genlab.signals``) is installed before the
recipe's module and what it imports load (Hydra, then torch and Lightning take seconds), so a signal in a
run's first second ends it with the documented exit code and no half-made run folder."""

from __future__ import annotations

from genlab.signals import stoppable


def train() -> None:
    """Console-script entry point (``genlab-train``)."""
    def main() -> None:
        from genlab.train import main as recipe_command

        recipe_command()

    stoppable("genlab-train", main)
