"""Meta-SGD (Li et al., 2017) for latency prediction across devices, as HELP uses it.

The predictor is a small functional MLP over a graph's features and a device's hardware
embedding; it outputs the log-latency residual over the roofline prior. Meta-SGD is
MAML with a *learned* learning rate per parameter: adapting to a device is
``steps`` gradient steps ``theta <- theta - alpha * grad`` on its K support samples,
and meta-training learns ``theta`` and ``alpha`` so that the adapted predictor does
well on the rest of the device's samples. After the steps the output bias is
re-centred on the support residuals (the per-device offset's least-squares value):
a device's overall speed is the one thing K samples pin down exactly, and doing it
inside meta-training too lets the network spend its steps on the rest.

Everything is explicit about randomness (a ``torch.Generator`` and a numpy ``Generator``
from the seed), so that one seed gives one model, bit for bit, on a given machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch

from optc.cost.learned_features import PRIOR_MODES, fit_prior, prior_log
from optc.errors import UserInputError

log = logging.getLogger(__name__)

Params = list[torch.Tensor]


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """Meta-training settings (HELP: 2 inner steps, K = 10)."""

    hidden: int = 64
    inner_steps: int = 2
    alpha_init: float = 0.02
    meta_lr: float = 2e-3
    iterations: int = 400
    support: int = 10
    query: int = 64
    recenter: bool = True
    bound: float = 1.2
    weight_decay: float = 1e-4
    prior: str = "fitted"
    """What the network corrects (``learned_features.PRIOR_MODES``): ``fitted`` — the
    roofline's busy time per op-class group and a per-node cost, weighted per device by
    non-negative least squares on its support samples (``learned_features.fit_prior``);
    ``fitted-depthwise`` — the same with depthwise convolutions a group of their own;
    ``roofline`` — the nominal roofline alone (model files written before the fitted
    prior existed)."""
    extrapolation: float = 1.0
    """How fast the network's correction gives way to the fitted prior for a graph outside
    the meta-training feature range (``learned_range.trust``: the share kept is
    ``exp(-distance / extrapolation)``, distance in training standard deviations); 0
    keeps the whole correction everywhere (the network still sees clipped features)."""

    def __post_init__(self) -> None:
        if self.prior not in PRIOR_MODES:  # a typo would silently train another prior
            raise UserInputError(
                f"prior must be one of {', '.join(PRIOR_MODES)}, not {self.prior!r}"
            )


@dataclasses.dataclass(frozen=True)
class Task:
    """One device's data: standardized features, embedding, targets, reference rows."""

    x: torch.Tensor  # (n, d) float32
    embedding: torch.Tensor  # (e,)
    y: torch.Tensor  # (n,) log-latency residuals, centred
    references: tuple[int, ...] = ()  # rows that are the reference models
    columns: np.ndarray | None = None  # fitted prior's columns: y is then ln(latency)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside, restoring the caller's setting after: the matrices
    here are tiny, and on a busy machine a second thread only adds waiting (measured: an
    order of magnitude slower meta-training on a loaded 2-core host)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def init_params(features: int, embedding: int, hidden: int, seed: int) -> Params:
    """Fresh weights: an arch branch, a hardware branch, a joint layer, a linear skip."""
    gen = torch.Generator().manual_seed(seed)

    def layer(out: int, inp: int) -> list[torch.Tensor]:
        bound = 1.0 / inp**0.5
        weight = (torch.rand(out, inp, generator=gen) * 2 - 1) * bound
        return [weight, torch.zeros(out)]

    params = (
        layer(hidden, features)
        + layer(hidden, embedding)
        + layer(hidden, 2 * hidden)
        + layer(1, hidden)
        + [torch.zeros(1, features)]
    )
    return [p.requires_grad_() for p in params]


def forward(
    params: Params, x: torch.Tensor, embedding: torch.Tensor, bound: float = 1.2
) -> torch.Tensor:
    """Predicted centred log-latency residual for each row of ``x`` on one device.

    The graph-dependent part is squashed into ``(-bound, bound)`` (e^1.2 ~ 3.3x either
    way) and the device offset ``b2`` added outside: a graph unlike the training ones
    cannot send the prediction to absurd values, however far the device is from the
    roofline overall. (Benchmark, leave-one-device-out and the host's real models:
    bound 1.2 kept the ranking of 2.5 and halved the real models' MAPE.)"""
    wa, ba, wh, bh, w1, b1, w2, b2, skip = params
    arch = torch.relu(x @ wa.T + ba)
    hw = torch.relu(embedding @ wh.T + bh).expand(x.shape[0], -1)
    joint = torch.relu(torch.cat([arch, hw], dim=1) @ w1.T + b1)
    shape = (joint @ w2.T + x @ skip.T).squeeze(1)
    return bound * torch.tanh(shape / bound) + b2


def adapt(
    params: Params,
    alphas: Params,
    x: torch.Tensor,
    embedding: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    recenter: bool,
    create_graph: bool = False,
    bound: float = 1.2,
) -> Params:
    """Meta-SGD inner loop on a support set: fast weights for one device.

    With ``recenter`` the output bias is moved to the support's mean residual before
    the steps as well as after: a device much faster or slower than the training ones
    would otherwise give huge first gradients, which the learned rates turn into
    overshoots; centred, the steps only fit how the device differs in *shape*."""
    fast = list(params)
    if recenter:
        fast[7] = fast[7] + torch.mean(y - forward(fast, x, embedding, bound))
    for _ in range(steps):
        loss = torch.mean((forward(fast, x, embedding, bound) - y) ** 2)
        grads = torch.autograd.grad(loss, fast, create_graph=create_graph)
        fast = [p - a * g for p, a, g in zip(fast, alphas, grads, strict=True)]
    if recenter:
        shift = torch.mean(y - forward(fast, x, embedding, bound))
        fast[7] = fast[7] + shift  # the output bias b2
    return fast


def select_steps(
    members: list[tuple[Params, Params]],
    x: torch.Tensor,
    embedding: torch.Tensor,
    targets: Callable[[np.ndarray], torch.Tensor],
    config: MetaConfig,
    candidates: tuple[int, ...] = (0, 2, 6, 20),
    shrinks: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0),
) -> tuple[int, float]:
    """How many inner steps to take on this device, and how much of the adapted network's
    graph-dependent correction to keep, by leave-one-out on its samples.

    Meta-SGD's rates are learned for devices like the training ones; for a device unlike
    all of them two steps may be too few, and for one whose K samples are unusual (the
    extreme reference models) any step may hurt; on a device unlike every training one
    (eager torch) the correction itself may hurt, and shrinking it to 0 leaves the fitted
    prior and the device's offset. The shrink grid is in quarters: every share is scored
    from the same adapted outputs, so a finer grid costs no adaptation (benchmark, mean
    rho / MAPE, halves -> quarters: references 0.951 / 28.5 % -> 0.956 / 27.3 %, eager
    torch and ort-1t keeping a quarter where they kept half and none; random draws
    0.958 / 27.3 % -> 0.960 / 27.7 %). Each candidate adapts the ensemble on K-1 samples
    (``targets(kept)``: every sample's target with the prior fitted on the kept ones) and
    predicts the one left out; the lowest mean squared error wins (ties: fewer steps,
    more correction). With fewer than 3 samples: the meta-trained count, all of it.
    """
    n = x.shape[0]
    if n < 3:
        return config.inner_steps, 1.0
    squared = np.zeros((len(candidates), len(shrinks)))
    for left in range(n):
        kept = np.array([i for i in range(n) if i != left])
        y = targets(kept)
        for row, steps in enumerate(candidates):
            outputs = torch.stack(
                [
                    forward(
                        adapt(
                            p,
                            a,
                            x[kept],
                            embedding,
                            y[kept],
                            steps,
                            config.recenter,
                            bound=config.bound,
                        ),
                        x,
                        embedding,
                        config.bound,
                    ).detach()
                    for p, a in members
                ]
            ).mean(dim=0)
            for column, shrink in enumerate(shrinks):
                shift = torch.mean(y[kept] - shrink * outputs[kept])
                squared[row, column] += float((shrink * outputs[left] + shift - y[left]) ** 2)
    log.debug(
        "leave-one-out errors by inner steps %s x shrink %s: %s", candidates, shrinks, squared / n
    )
    row, column = np.unravel_index(int(np.argmin(squared)), squared.shape)
    return candidates[row], shrinks[column]


def meta_train(tasks: list[Task], config: MetaConfig, seed: int) -> tuple[Params, Params]:
    """Learn initial weights and per-parameter inner learning rates over ``tasks``."""
    rng = np.random.default_rng(seed)
    dims = (tasks[0].x.shape[1], tasks[0].embedding.shape[0])
    params = init_params(*dims, config.hidden, seed)
    alphas = [torch.full_like(p, config.alpha_init).requires_grad_() for p in params]
    optimizer = torch.optim.Adam(
        [{"params": params, "weight_decay": config.weight_decay}, {"params": alphas}],
        lr=config.meta_lr,
    )
    for iteration in range(config.iterations):
        optimizer.zero_grad()
        losses = [_episode(t, params, alphas, config, rng) for t in tasks]
        loss = torch.stack(losses).mean()
        loss.backward()
        optimizer.step()
        if iteration % 100 == 0:
            log.debug("meta-iteration %d: query loss %.4f", iteration, loss.item())
    return [p.detach() for p in params], [a.detach() for a in alphas]


def _episode(
    task: Task, params: Params, alphas: Params, config: MetaConfig, rng: np.random.Generator
) -> torch.Tensor:
    """Adapt on K support rows, score on query rows (the reference rows half the time,
    as in HELP's protocol, random rows otherwise)."""
    n = task.x.shape[0]
    if task.references and rng.random() < 0.5:
        support = np.asarray(task.references)
    else:
        support = rng.choice(n, size=min(config.support, n - 1), replace=False)
    rest = np.setdiff1d(np.arange(n), support)
    query = rng.choice(rest, size=min(config.query, rest.size), replace=False)
    y = task.y if task.columns is None else task.y - fitted_base(task.columns, task.y, support)
    fast = adapt(
        params,
        alphas,
        task.x[support],
        task.embedding,
        y[support],
        config.inner_steps,
        config.recenter,
        create_graph=True,
        bound=config.bound,
    )
    predicted = forward(fast, task.x[query], task.embedding, config.bound)
    return torch.mean((predicted - y[query]) ** 2)


def fitted_base(
    columns: np.ndarray, log_latency: torch.Tensor, support: np.ndarray
) -> torch.Tensor:
    """ln of the prior fitted on the ``support`` rows, for every row: done per episode in
    meta-training, as adaptation will from the K samples it gets (not from all rows)."""
    latency = np.exp(log_latency.detach().numpy()[support].astype(np.float64))
    weights = fit_prior(columns[support], latency)
    return torch.as_tensor(prior_log(columns, weights), dtype=log_latency.dtype)


def fit_scratch(
    x: torch.Tensor,
    y: torch.Tensor,
    embedding_size: int,
    config: MetaConfig,
    seed: int,
    steps: int = 300,
) -> Params:
    """The same network trained from scratch on the support rows only (baseline (c))."""
    params = init_params(x.shape[1], embedding_size, config.hidden, seed)
    optimizer = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3)
    blank = torch.zeros(embedding_size)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.mean((forward(params, x, blank, config.bound) - y) ** 2)
        loss.backward()
        optimizer.step()
    return [p.detach() for p in params]
