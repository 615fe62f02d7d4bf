"""hello-pt's model and data: a small MLP on scikit-learn's bundled digits (no download).

Everything here is deterministic, so a federation and ``shoal simulate`` of the same job give
the same global model:

* the test split is the same on every site (25%, stratified, ``random_state=0``);
* the training part is split NON-identically by site name (label skew): of N sites, class c
  has a "home" site (site-(c*N//10 + 1)) that gets 80% of that class, the others share the rest;
* the initial weights come from a fixed seed, so in round 0 (no model on the server) every
  site starts from the same network;
* each round's shuffling uses its own generator seeded from (site, round), never global state,
  because a site process (federation) or a simulator worker runs many rounds/sites in a row.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

NUM_CLASSES = 10
HOME_SHARE = 0.8


def make_net() -> nn.Module:
    """The network with its seeded initial weights (identical on every site)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES))


def _all_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return x_train, y_train, x_test, y_test


def site_index(site: str) -> int:
    """0-based index of "site-k" (site-1 -> 0)."""
    return int(site.rsplit("-", 1)[-1]) - 1


def site_data(site: str, num_sites: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The training rows this site holds: 80% of its home classes, a share of the others."""
    x, y, _, _ = _all_data()
    me = site_index(site)
    if not 0 <= me < num_sites:
        raise ValueError(f"{site} is not one of {num_sites} sites (pass --num-sites)")
    rng = np.random.RandomState(0)
    mine: list[np.ndarray] = []
    for c in range(NUM_CLASSES):
        rows = rng.permutation(np.flatnonzero(y == c))
        home = c * num_sites // NUM_CLASSES
        if num_sites == 1:
            mine.append(rows)
            continue
        n_home = int(round(HOME_SHARE * len(rows)))
        if me == home:
            mine.append(rows[:n_home])
        else:
            others = [s for s in range(num_sites) if s != home]
            mine.append(np.array_split(rows[n_home:], len(others))[others.index(me)])
    idx = np.sort(np.concatenate(mine))
    return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def held_out_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out split, the same on every site and in the tests."""
    _, _, x, y = _all_data()
    return torch.from_numpy(x), torch.from_numpy(y)


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``net`` on (x, y)."""
    net.eval()
    with torch.no_grad():
        logits = net(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return accuracy, loss


def local_train(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int, seed: int
) -> float:
    """Train ``net`` in place with Adam (fresh each round); return the last epoch's mean loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    epoch_loss = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        epoch_loss = total / len(y)
    return epoch_loss


def local_train_dp(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    engine: Any,
    epochs: int,
    lr: float,
    batch_size: int,
    noise_multiplier: float,
    max_grad_norm: float,
    delta: float,
) -> tuple[float, dict[str, Any]]:
    """DP-SGD with Opacus: ``net`` trained in place, each example's gradient clipped to
    ``max_grad_norm`` and Gaussian noise of ``noise_multiplier`` times that added to every batch's
    sum, batches drawn by Poisson sampling. ``engine`` is the script's one PrivacyEngine, whose
    accountant spans every round this process trains. Returns the last epoch's mean loss and the
    report the server accounts (docs/privacy.md, ``example_dp``): the mechanism run this round
    and Opacus' epsilon so far.

    Unlike ``local_train`` this is not reproducible, on purpose: noise and sampling that anyone
    could replay from a known seed would protect nothing, so both come from the OS's randomness."""
    from opacus.accountants import RDPAccountant
    from torch.utils.data import DataLoader, TensorDataset

    accountant: RDPAccountant = engine.accountant
    before = sum(steps for _, _, steps in accountant.history)
    sampling = torch.Generator().manual_seed(secrets.randbits(63))
    noise = torch.Generator().manual_seed(secrets.randbits(63))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=sampling)
    net.train()  # Opacus takes a module in training mode only
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    model, optimizer, loader = engine.make_private(
        module=net,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        noise_generator=noise,
    )
    model.train()
    epoch_loss = 0.0
    for _ in range(epochs):
        total, seen = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            if len(yb) == 0:  # Poisson sampling can draw an empty batch: the step still counts
                optimizer.step()
                continue
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            seen += len(yb)
        epoch_loss = total / max(seen, 1)
    model.remove_hooks()  # net is the plain module again (its state_dict has its own names)
    z, q, _ = accountant.history[-1]
    report = {
        "noise_multiplier": float(z),
        "sample_rate": float(q),
        "steps": sum(steps for _, _, steps in accountant.history) - before,
        "epsilon": float(accountant.get_epsilon(delta)),
        "delta": delta,
        "accountant": "opacus rdp",
    }
    return epoch_loss, report
