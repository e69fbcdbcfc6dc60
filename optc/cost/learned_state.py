"""What a learned latency model is made of, and its file format (``torch.save``).

The file holds plain tensors, numbers and strings only, so that it loads with
``torch.load(weights_only=True)``: a model file from someone else cannot run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optc.cost.learned_data import EmbeddingSpace
from optc.cost.learned_features import ENCODER_VERSION
from optc.cost.learned_range import FeatureRange
from optc.cost.metasgd import MetaConfig, Params
from optc.errors import UserInputError

FORMAT = 1


@dataclasses.dataclass(frozen=True)
class LearnedState:
    """A meta-trained model (``members``: per ensemble member, initial weights and inner
    learning rates) and, once adapted, the device it was adapted to."""

    config: MetaConfig
    seed: int
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    space: EmbeddingSpace
    members: tuple[tuple[Params, Params], ...]
    devices: tuple[str, ...]
    device: str = ""
    embedding: np.ndarray | None = None
    adapted: tuple[Params, ...] = ()
    spread: float = 0.0  # RMS log-error on the adaptation samples
    steps: int = 0  # inner steps the adaptation took (leave-one-out choice)
    prior_weights: np.ndarray | None = None  # fitted prior's weights; None: roofline prior
    shrink: float = 1.0  # share of the network's correction kept (leave-one-out choice)
    shift: float = 0.0  # log-space offset that goes with that share
    level: float = 0.0  # the offset with none of it: where an untrusted correction goes
    feature_range: FeatureRange | None = None  # training range (None: files before it)

    def digest(self) -> str:
        sha = hashlib.sha256()
        for tensor in _tensors(self):
            sha.update(tensor.detach().contiguous().numpy().tobytes())
        sha.update(
            repr(
                (
                    self.config,
                    self.seed,
                    self.y_mean,
                    self.space,
                    self.devices,
                    self.device,
                    self.spread,
                    self.steps,
                    self.shrink,
                    self.shift,
                    self.level,
                )
            ).encode()
        )
        return sha.hexdigest()[:16]


def _tensors(state: LearnedState) -> list[torch.Tensor]:
    found = [torch.as_tensor(state.x_mean), torch.as_tensor(state.x_std)]
    for params, alphas in state.members:
        found += params + alphas
    for fast in state.adapted:
        found += fast
    if state.embedding is not None:
        found.append(torch.as_tensor(state.embedding))
    if state.prior_weights is not None:
        found.append(torch.as_tensor(state.prior_weights))
    if state.feature_range is not None:
        found += [
            torch.as_tensor(state.feature_range.low),
            torch.as_tensor(state.feature_range.high),
        ]
    return found


def save_state(state: LearnedState, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "format": FORMAT,
        "encoder": ENCODER_VERSION,
        "config": dataclasses.asdict(state.config),
        "seed": state.seed,
        "x_mean": torch.as_tensor(state.x_mean),
        "x_std": torch.as_tensor(state.x_std),
        "y_mean": state.y_mean,
        "space": dataclasses.asdict(state.space),
        "members": [[list(p), list(a)] for p, a in state.members],
        "devices": list(state.devices),
        "device": state.device,
        "embedding": None if state.embedding is None else torch.as_tensor(state.embedding),
        "adapted": [list(fast) for fast in state.adapted],
        "spread": state.spread,
        "steps": state.steps,
        "shrink": state.shrink,
        "shift": state.shift,
        "level": state.level,
        "feature_range": None
        if state.feature_range is None
        else [torch.as_tensor(state.feature_range.low), torch.as_tensor(state.feature_range.high)],
        "prior_weights": None
        if state.prior_weights is None
        else torch.as_tensor(state.prior_weights),
    }
    temporary = target.with_name(target.name + ".tmp")
    torch.save(document, temporary)
    temporary.replace(target)  # atomic: a reader never sees half a model
    return target


def load_state(path: str | Path) -> LearnedState:
    source = Path(path)
    try:
        doc = torch.load(source, weights_only=True)
    except FileNotFoundError:
        raise UserInputError(f"no learned latency model at {source}") from None
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise UserInputError(f"{source} is not a learned latency model file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserInputError(f"{source} is not a learned latency model file of format {FORMAT}")
    if doc.get("encoder") != ENCODER_VERSION:
        raise UserInputError(
            f"{source} was fit with graph features v{doc.get('encoder')}, "
            f"this optc computes v{ENCODER_VERSION}: train it again"
        )
    space = doc["space"]
    return LearnedState(
        # Files from before the fitted prior name no prior: theirs is the roofline.
        config=MetaConfig(**{"prior": "roofline", **doc["config"]}),
        seed=int(doc["seed"]),
        x_mean=doc["x_mean"].numpy(),
        x_std=doc["x_std"].numpy(),
        y_mean=float(doc["y_mean"]),
        space=EmbeddingSpace(
            tuple(space["reference_keys"]),
            float(space["scale_mean"]),
            float(space["scale_std"]),
            tuple(space["fallback"]),
        ),
        members=tuple((list(p), list(a)) for p, a in doc["members"]),
        devices=tuple(doc["devices"]),
        device=str(doc["device"]),
        embedding=None if doc["embedding"] is None else doc["embedding"].numpy(),
        adapted=tuple(list(f) for f in doc["adapted"]),
        spread=float(doc["spread"]),
        steps=int(doc.get("steps", 0)),
        shrink=float(doc.get("shrink", 1.0)),
        shift=float(doc.get("shift", 0.0)),
        level=float(doc.get("level", 0.0)),
        feature_range=None
        if doc.get("feature_range") is None
        else FeatureRange(*(t.numpy() for t in doc["feature_range"])),
        prior_weights=None if doc.get("prior_weights") is None else doc["prior_weights"].numpy(),
    )
