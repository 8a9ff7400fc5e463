"""PaiNN (Schütt, Unke and Gastegger, ICML 2021) as schnetpack 2.0.4 computes it, in plain torch.

The GOLF paper trains PaiNN for every NNP it reports (reference/golf-paper.md §3):
``PaiNN(n_atom_basis=128, n_interactions=3, BesselRBF(n_rbf=50, cutoff=5.0), CosineCutoff(5.0))``
with an ``Atomwise`` head (a 128 -> 64 -> 1 SiLU MLP, summed over atoms). schnetpack itself cannot be
a dependency here (2.0.x breaks on torch >= 2.4; 2.2 needs Python >= 3.12 and pulls Lightning and
Hydra), so this module re-implements those pieces operation for operation: the same layers, the same
order of operations, and module names chosen so that our ``state_dict`` keys are the authors' keys
(``representation.*``, ``output_modules.0.outnet.*``). :func:`golf.nnp.model.import_schnetpack_painn`
loads their checkpoints without renaming anything.

Layout. The model takes the project's padded batch (element indices (B, N), -1 padding; coordinates
(B, N, 3) Angstrom) and computes on a flat list of the real atoms with the neighbour pairs inside
the cutoff only. schnetpack's authors pass every atom pair and let the cosine cutoff zero the far
ones; a far pair contributes exactly 0 to every sum (its filter is multiplied by 0), so dropping
it changes nothing but the work. Flat beats padded here: padded message passing over (B, N, N)
pairs would spend most of its time on padding and far pairs (a 41-atom nablaDFT molecule has
1640 ordered pairs, about 60 % of them inside 5 Angstrom), while the flat layout touches
only real pairs. Pairs are found under ``no_grad`` (the choice of pairs is not differentiable);
the distances themselves are recomputed from the coordinates with the graph kept, so forces and
force-training gradients flow as in schnetpack.

Speed. A step is bound by memory traffic, not arithmetic: at batch 64 of nablaDFT molecules
(2 600 atoms, 50 000 pairs) every (pairs, 3, F) tensor is 77 MB. The default path therefore
builds each layer's filters one part at a time (never the (pairs, 3FL) tensor), keeps every per-pair
tensor contiguous (products of strided slices ran 7-16x slower on CPU), skips the first layer's
all-zero vector messages, and :func:`keep_freed_memory` stops glibc from unmapping and re-faulting
those tensors on every step. bench/painn_throughput.py measures it against schnetpack 2.0.4 itself.

These change the order of a few sums (and dropping far pairs changes the shapes the BLAS kernels
see), so results differ from schnetpack's in the last bits (about 1e-15 in float64).
:attr:`PaiNNPotential.pairs` = "all" passes every pair, as the authors do, through schnetpack's own
operations in its order, and then reproduces schnetpack bit for bit, also along an L-BFGS
trajectory, where such 1e-15 differences can grow to a few 1e-6 Angstrom on an
ill-conditioned conformation (tests/test_painn.py).
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dense", "BesselRBF", "CosineCutoff", "PaiNNRepresentation", "Atomwise", "PaiNNPotential"]


class Dense(nn.Linear):
    """schnetpack.nn.Dense: a linear layer (Xavier-uniform weights, zero bias) with an optional activation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation=None):
        super().__init__(in_features, out_features, bias)
        self.activation = activation if activation is not None else nn.Identity()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(F.linear(x, self.weight, self.bias))


class BesselRBF(nn.Module):
    """sin(n pi d / cutoff) / d for n = 1..n_rbf (schnetpack.nn.BesselRBF; DimeNet's 0th-order Bessel)."""

    def __init__(self, n_rbf: int, cutoff: float):
        super().__init__()
        self.n_rbf = n_rbf
        self.register_buffer("freqs", torch.arange(1, n_rbf + 1) * math.pi / cutoff)

    def forward(self, d: Tensor) -> Tensor:
        ax = d[..., None] * self.freqs
        norm = torch.where(d == 0, torch.ones_like(d), d)
        return torch.sin(ax) / norm[..., None]


class CosineCutoff(nn.Module):
    """Behler's 0.5 (cos(pi d / cutoff) + 1) for d < cutoff, else 0 (schnetpack.nn.CosineCutoff)."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.register_buffer("cutoff", torch.tensor([cutoff], dtype=torch.get_default_dtype()))

    def forward(self, d: Tensor) -> Tensor:
        return 0.5 * (torch.cos(d * math.pi / self.cutoff) + 1.0) * (d < self.cutoff).to(d.dtype)


class _Interaction(nn.Module):
    """schnetpack's PaiNNInteraction: messages from neighbours j to atoms i."""

    def __init__(self, n_atom_basis: int, activation):
        super().__init__()
        self.n_atom_basis = n_atom_basis
        self.interatomic_context_net = nn.Sequential(
            Dense(n_atom_basis, n_atom_basis, activation=activation),
            Dense(n_atom_basis, 3 * n_atom_basis, activation=None),
        )

    def forward(self, q, mu, w_ij, dir_ij, idx_i, idx_j, n_atoms: int, mu_is_zero: bool = False):
        """``w_ij``: the layer's three filters (scalar, direction, vector), each (pairs, F) and contiguous."""
        # Every per-pair tensor is contiguous and same-shaped or an outer product: on CPU, elementwise
        # products of strided slices broadcast against each other ran 7-16x slower (measured).
        # index_select, not advanced indexing: its backward is a plain index_add.
        context = torch.split(self.interatomic_context_net(q.squeeze(1)), self.n_atom_basis, dim=1)
        x_q, x_r, x_mu = (w * c.index_select(0, idx_j) for w, c in zip(w_ij, context, strict=True))
        dmu = x_r[:, None, :] * dir_ij[:, :, None]  # (pairs, 3, F)
        if not mu_is_zero:  # the first layer's mu is all zeros: its term adds exactly 0
            dmu = dmu + x_mu[:, None, :] * mu.index_select(0, idx_j)
        return q + _sum_into(x_q, idx_i, n_atoms)[:, None], mu + _sum_into(dmu, idx_i, n_atoms)

    def forward_as_schnetpack(self, q, mu, w_ij, dir_ij, idx_i, idx_j, n_atoms: int):
        """schnetpack's own operations in its order (``w_ij``: the layer's (pairs, 1, 3F) filters):
        bit for bit its result, about 1.4x slower than :meth:`forward` on CPU at the same pairs."""
        x = w_ij * self.interatomic_context_net(q)[idx_j]  # (pairs, 1, 3F)
        dq, dmu_r, dmu_mu = torch.split(x, self.n_atom_basis, dim=-1)
        dq = _sum_into(dq, idx_i, n_atoms)
        dmu = _sum_into(dmu_r * dir_ij[..., None] + dmu_mu * mu[idx_j], idx_i, n_atoms)  # from (pairs, 3, F)
        return q + dq, mu + dmu


def _sum_into(values: Tensor, index: Tensor, n: int) -> Tensor:
    """Sum the rows of ``values`` into ``n`` rows by ``index`` (a scatter-add)."""
    return torch.zeros((n, *values.shape[1:]), dtype=values.dtype, device=values.device).index_add(0, index, values)


class _Mixing(nn.Module):
    """schnetpack's PaiNNMixing: per-atom mixing of scalar and vector channels."""

    def __init__(self, n_atom_basis: int, activation, epsilon: float = 1e-8):
        super().__init__()
        self.n_atom_basis = n_atom_basis
        self.intraatomic_context_net = nn.Sequential(
            Dense(2 * n_atom_basis, n_atom_basis, activation=activation),
            Dense(n_atom_basis, 3 * n_atom_basis, activation=None),
        )
        self.mu_channel_mix = Dense(n_atom_basis, 2 * n_atom_basis, activation=None, bias=False)
        self.epsilon = epsilon

    def forward(self, q, mu):
        mu_v, mu_w = torch.split(self.mu_channel_mix(mu), self.n_atom_basis, dim=-1)
        mu_vn = torch.sqrt(torch.sum(mu_v**2, dim=-2, keepdim=True) + self.epsilon)
        x = self.intraatomic_context_net(torch.cat([q, mu_vn], dim=-1))
        dq_intra, dmu_intra, dqmu_intra = torch.split(x, self.n_atom_basis, dim=-1)
        dqmu_intra = dqmu_intra * torch.sum(mu_v * mu_w, dim=1, keepdim=True)
        return q + dq_intra + dqmu_intra, mu + dmu_intra * mu_w


class PaiNNRepresentation(nn.Module):
    """schnetpack.representation.PaiNN (separate interaction and filter weights per layer)."""

    def __init__(
        self, n_atom_basis: int = 128, n_interactions: int = 3, n_rbf: int = 50, cutoff: float = 5.0, max_z: int = 100
    ):
        super().__init__()
        self.n_atom_basis = n_atom_basis
        self.n_interactions = n_interactions
        self.cutoff_fn = CosineCutoff(cutoff)
        self.radial_basis = BesselRBF(n_rbf, cutoff)
        self.embedding = nn.Embedding(max_z, n_atom_basis, padding_idx=0)
        self.filter_net = Dense(n_rbf, n_interactions * n_atom_basis * 3, activation=None)
        self.interactions = nn.ModuleList(_Interaction(n_atom_basis, F.silu) for _ in range(n_interactions))
        self.mixing = nn.ModuleList(_Mixing(n_atom_basis, F.silu) for _ in range(n_interactions))

    def forward(self, z: Tensor, r_ij: Tensor, idx_i: Tensor, idx_j: Tensor, as_schnetpack: bool = False) -> Tensor:
        """Scalar atom features (atoms, n_atom_basis) from atomic numbers (atoms,) and pair vectors
        r_j - r_i (pairs, 3) Angstrom; ``as_schnetpack``: in schnetpack's order of operations."""
        n_atoms = z.shape[0]
        d_ij = torch.norm(r_ij, dim=1, keepdim=True)  # (pairs, 1)
        dir_ij = r_ij / d_ij
        rbf, cut = self.radial_basis(d_ij), self.cutoff_fn(d_ij)  # (pairs, 1, n_rbf), (pairs, 1)
        q = self.embedding(z)[:, None]  # (atoms, 1, F)
        mu = torch.zeros((n_atoms, 3, self.n_atom_basis), dtype=q.dtype, device=q.device)
        layers = list(zip(self.interactions, self.mixing, strict=True))
        if as_schnetpack:  # every layer's filters at once, (pairs, 1, 3FL)
            filters = torch.split(self.filter_net(rbf) * cut[..., None], 3 * self.n_atom_basis, dim=-1)
            for w_ij, (interaction, mixing) in zip(filters, layers, strict=True):
                q, mu = mixing(*interaction.forward_as_schnetpack(q, mu, w_ij, dir_ij, idx_i, idx_j, n_atoms))
            return q.squeeze(1)
        # The same filters, (rbf W^T + b) * cutoff, one layer and one part (scalar, direction,
        # vector) at a time: each (pairs, F) and contiguous, never all 3L parts at once (the filters
        # are the largest tensors of a step). Forces then sum over the parts in another order than
        # schnetpack's one product does: equal to rounding (1e-15 in float64), not bit for bit.
        weights = torch.split(self.filter_net.weight, self.n_atom_basis)
        biases = torch.split(self.filter_net.bias, self.n_atom_basis)
        rbf = rbf.squeeze(1)
        for layer, (interaction, mixing) in enumerate(layers):
            w_ij = [F.linear(rbf, weights[k], biases[k]) * cut for k in range(3 * layer, 3 * layer + 3)]
            q, mu = mixing(*interaction(q, mu, w_ij, dir_ij, idx_i, idx_j, n_atoms, mu_is_zero=layer == 0))
        return q.squeeze(1)


class Atomwise(nn.Module):
    """schnetpack.atomistic.Atomwise(n_in, n_out=1): the default pyramidal two-layer SiLU MLP
    (n_in -> n_in // 2 -> 1), summed over each molecule's atoms."""

    def __init__(self, n_in: int):
        super().__init__()
        self.outnet = nn.Sequential(Dense(n_in, max(1, n_in // 2), activation=F.silu), Dense(max(1, n_in // 2), 1))

    def forward(self, features: Tensor, idx_m: Tensor, n_molecules: int) -> Tensor:
        y = self.outnet(features)  # (atoms, 1)
        return torch.zeros((n_molecules, 1), dtype=y.dtype, device=y.device).index_add(0, idx_m, y).squeeze(-1)


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel; True if it did.

    A PaiNN step allocates and frees dozens of (pairs, F) and (pairs, 3, F) tensors of 25-77 MB. glibc
    serves each from a fresh ``mmap`` and unmaps it on free, so every step pays the kernel to zero
    and map its pages again: at batch 64 on nablaDFT molecules, 0.9 million page faults and over half
    of a training step (bench/painn_throughput.py, ``--default-allocator``). Serving them from the
    heap, and trimming the heap only above 2 GB free, removes that: the process keeps its peak
    memory until it exits. This is PyTorch's CPU tuning advice (a caching malloc such as jemalloc)
    done with glibc's own ``mallopt``; elsewhere (macOS, musl) it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


class PaiNNPotential(nn.Module):
    """PaiNN representation + Atomwise energy head on padded batches.

    Args:
        atomic_numbers: (E,) int64, the atomic number of each element index the caller uses.
        n_atom_basis, n_interactions, n_rbf, cutoff: schnetpack's PaiNN hyperparameters (Angstrom).
    """

    def __init__(
        self, atomic_numbers, n_atom_basis: int = 128, n_interactions: int = 3, n_rbf: int = 50, cutoff: float = 5.0
    ):
        super().__init__()
        self.representation = PaiNNRepresentation(n_atom_basis, n_interactions, n_rbf, cutoff)
        self.output_modules = nn.ModuleList([Atomwise(n_atom_basis)])
        self.pairs = "cutoff"  # or "all": every pair, as the authors' neighbour list (see the module docstring)
        # element index -> atomic number; not persistent: the authors' checkpoints do not have it.
        self.register_buffer("_z_of_index", torch.as_tensor(atomic_numbers, dtype=torch.long), persistent=False)
        keep_freed_memory()

    @property
    def cutoff(self) -> float:
        return float(self.representation.cutoff_fn.cutoff)

    def forward(self, elem_idxs: Tensor, coordinates: Tensor) -> Tensor:
        """Energies (B,) in the model's dtype, Hartree (no self energies / atomrefs).

        Args:
            elem_idxs: (B, N) element indices, -1 for padding.
            coordinates: (B, N, 3) Angstrom.
        """
        b, n = elem_idxs.shape
        real = elem_idxs >= 0  # (B, N)
        flat = real.reshape(-1).nonzero().squeeze(1)  # (atoms,) positions in the padded (B*N) layout
        with torch.no_grad():
            d = torch.cdist(coordinates.detach(), coordinates.detach())  # (B, N, N) Angstrom
            pairs = real[:, :, None] & real[:, None, :]
            if self.pairs == "cutoff":
                pairs &= d < self.cutoff
            pairs &= ~torch.eye(n, dtype=torch.bool, device=pairs.device)
            m, i, j = pairs.nonzero(as_tuple=True)
            compact = torch.cumsum(real.reshape(-1), 0) - 1  # padded position -> flat atom index
            idx_i, idx_j = compact[m * n + i], compact[m * n + j]
        pos = coordinates.reshape(-1, 3)[flat]  # (atoms, 3), differentiable
        z = self._z_of_index[elem_idxs.reshape(-1)[flat]]
        features = self.representation(z, pos[idx_j] - pos[idx_i], idx_i, idx_j, as_schnetpack=self.pairs == "all")
        idx_m = flat // n
        return self.output_modules[0](features, idx_m, b)
