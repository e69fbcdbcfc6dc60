"""``optc latency collect|train|adapt|eval``: the learned latency model's data and training.

A click group over two modules: ``latency_collect`` measures models on devices into a
dataset; ``latency_model`` meta-trains the predictor, adapts it to a device from a few
measurements and evaluates it leave-one-device-out.
"""

from __future__ import annotations

import click

from optc.cli import latency_collect, latency_model
from optc.cli.failures import EXIT_CODES_HELP, OptcGroup


@click.group("latency", cls=OptcGroup, epilog=EXIT_CODES_HELP)
def group() -> None:
    """Collect latency datasets and train, adapt and evaluate the learned latency model."""


group.add_command(latency_collect.command)
group.add_command(latency_model.train_command)
group.add_command(latency_model.adapt_command)
group.add_command(latency_model.eval_command)
