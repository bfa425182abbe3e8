"""Recurrent parts: the frame predictor LSTM and the Gaussian LSTMs (posterior, learned prior).

State is explicit: ``out, state = module(x, state)``. ``x`` is (B, L, in) for a whole input sequence or (B, in)
for one step; ``state`` is ``None`` (zeros) or the (h, c) pair returned by the previous call. Running a sequence
in one call gives the same result as stepping through it (up to BatchNorm statistics in training mode, which
are taken over all the steps of the call).
"""

from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]


class _LSTMBase(nn.Module):
    def __init__(self, in_dim: int, hidden: int, n_layers: int):
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, n_layers, batch_first=True)

    def _run(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State, bool]:
        step = x.dim() == 2
        if step:
            x = x[:, None]
        out, state = self.lstm(self.embed(x), state)  # (B, L, hidden)
        return out, state, step


class PredictorLSTM(_LSTMBase):
    """LSTM on concat(h_{t-1}, z_t, c_t) -> g_t: linear + BatchNorm + tanh to g_dim."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, n_layers: int):
        super().__init__(in_dim, hidden, n_layers)
        self.head = nn.Linear(hidden, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        out, state, step = self._run(x, state)
        y = self.head(out)
        y = torch.tanh(self.bn(y.flatten(0, 1)).view_as(y))  # BatchNorm over (B * L)
        return (y[:, 0] if step else y), state


class GaussianLSTM(_LSTMBase):
    """LSTM whose two linear heads give the mean and log-variance of a diagonal Gaussian over z."""

    def __init__(self, in_dim: int, z_dim: int, hidden: int, n_layers: int):
        super().__init__(in_dim, hidden, n_layers)
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)

    def forward(self, x: torch.Tensor, state: State | None = None
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], State]:
        out, state, step = self._run(x, state)
        if step:
            out = out[:, 0]
        return (self.mu(out), self.logvar(out)), state


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """z = mu + exp(0.5 logvar) * eps, eps ~ N(0, I)."""
    eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
                ) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over the last (latent) dimension."""
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)
    return kl.sum(-1)
