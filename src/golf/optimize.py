"""Batched L-BFGS: many conformations of different molecules optimised together, each with its own history.

GOLF moves every conformation with ``torch.optim.LBFGS`` at torch's default settings, one
``.step(closure)`` per trajectory step, with one optimiser (and so one history) per trajectory
(reference/golf-paper.md §1.3). :class:`BatchedLBFGS` does exactly that for a whole batch at once:
a slot holds one conformation and all of the state that ``torch.optim.LBFGS`` keeps between
``.step()`` calls (``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``,
``prev_loss``, ``n_iter``, ``func_evals``), as rows of padded tensors. Each inner iteration makes
ONE call of the energy/forces function for every slot that is still iterating; a slot that hits a
break condition early waits, masked, until the outer step ends. Slots are refilled with new
conformations (of other molecules, with other atom counts) as trajectories end.

Shape legend: B slots (the batch), N padded atoms, M = 3N flat coordinates, H history size.
Padding follows TorchANI: ``species == -1``; padded atoms have coordinates, gradients, directions
and history entries 0.0 and never move.

Units: coordinates in Angstrom, energies in Hartree, forces in Hartree/Angstrom; the objective is
the energy and its gradient is minus the forces.

The two-loop recursion is written in matrix form: with A[i, j] = s_i . y_j (kept up to date as
pairs are added), the first loop is the upper-triangular solve triu(A) al = S q and the second the
lower-triangular solve tril(A^T) c = diag(A) al - Y r (c = al - be). This is the same algebra as
torch's loops over the history (only round-off differs) with a fixed number of kernels whatever H.
S and Y are per-slot ring buffers; A is kept in logical (oldest-first) order and (B, H) vectors
move between the two orders through a per-slot permutation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from golf.data import STATUSES

__all__ = [
    "OptimizeError",
    "EnergyForces",
    "StepResult",
    "BatchedLBFGS",
    "Trajectory",
    "optimize",
    "energy_forces_from_energy",
]

# (species (B, N) int64, -1 padding; coordinates (B, N, 3) Angstrom) -> (energies (B,) Hartree,
# forces (B, N, 3) Hartree/Angstrom)
EnergyForces = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

_RUNNING = "running"
_CONVERGED = "converged"
_NONFINITE = "skipped_nonfinite"
assert {_RUNNING, _CONVERGED, _NONFINITE} <= set(STATUSES)

# torch.optim.LBFGS stores a curvature pair only when y.s exceeds this (hard-coded there too).
_YS_MIN = 1e-10


class OptimizeError(ValueError):
    """Bad optimiser settings or a conformation the optimiser cannot take."""


def energy_forces_from_energy(energy_fn: Callable[[Tensor, Tensor], Tensor]) -> EnergyForces:
    """Wrap ``energy_fn(species, coordinates) -> energies (B,)`` into an energy/forces function.

    Forces are minus the autograd gradient of the summed energies; each molecule's energy depends
    only on its own coordinates, so the gradient of the sum gives every molecule its own forces.
    """

    def energy_forces(species: Tensor, coordinates: Tensor) -> tuple[Tensor, Tensor]:
        coordinates = coordinates.detach().requires_grad_(True)
        with torch.enable_grad():
            energies = energy_fn(species, coordinates)
            (grad,) = torch.autograd.grad(energies.sum(), coordinates)
        return energies.detach(), -grad

    return energy_forces


@dataclass
class StepResult:
    """What one outer step did to each slot it ran (k slots; arrays on the CPU).

    ``positions``, ``energies`` and ``forces`` all belong to the returned geometry after the step
    (after the displacement cap and the close-atom repair; where a repair made it differ from the
    optimiser's own geometry, E/F come from one extra evaluation of those slots).
    ``start_energies``/``start_forces`` belong to the optimiser's geometry at the start of the step;
    on a slot's first step (``started``) that is the geometry given to :meth:`BatchedLBFGS.add`.
    For a ``skipped_nonfinite`` slot the arrays hold whatever was reached (possibly NaN).
    """

    slots: Tensor  # (k,) int64 slot indices
    keys: list[Any]  # (k,) the keys given to add()
    n_atoms: Tensor  # (k,) int64
    species: Tensor  # (k, N) int64, -1 padding
    positions: Tensor  # (k, N, 3) Angstrom
    energies: Tensor  # (k,) float64 Hartree
    forces: Tensor  # (k, N, 3) Hartree/Angstrom
    start_energies: Tensor  # (k,) float64 Hartree
    start_forces: Tensor  # (k, N, 3) Hartree/Angstrom
    status: list[str]  # (k,) names from golf.data.STATUSES
    started: Tensor  # (k,) bool: first step of this conformation
    repaired: Tensor  # (k,) bool: close atoms were pushed apart after the step
    capped: Tensor  # (k,) bool: the max-displacement limit shortened a move
    iterations: Tensor  # (k,) int64: inner iterations this step (torch's n_iter; a last one may break unmoved)
    evaluations: Tensor  # (k,) int64: energy/forces evaluations of this slot this step

    def __len__(self) -> int:
        return len(self.keys)

    def positions_of(self, i: int) -> np.ndarray:
        """(n_atoms, 3) positions of the i-th reported slot, unpadded."""
        return self.positions[i, : int(self.n_atoms[i])].numpy()

    def forces_of(self, i: int) -> np.ndarray:
        """(n_atoms, 3) forces of the i-th reported slot, unpadded."""
        return self.forces[i, : int(self.n_atoms[i])].numpy()


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-slot dot product of two (B, ...) tensors -> (B,)."""
    return (a * b).flatten(1).sum(1)


class BatchedLBFGS:
    """``torch.optim.LBFGS`` for a batch of conformations, one history per slot.

    Args:
        energy_forces: evaluates a padded batch, see :data:`EnergyForces`. It is called with only
            the slots that need an evaluation, trimmed to their largest atom count.
        batch_size: number of slots B.
        lr, max_iter, max_eval, history_size, tolerance_grad, tolerance_change: as in
            ``torch.optim.LBFGS`` (defaults are torch's, which GOLF uses: golf-paper.md §1.3);
            ``max_eval`` defaults to ``max_iter * 5 // 4``. No line search (GOLF uses none).
            ``tolerance_grad`` is on max |g| in Hartree/Angstrom, ``tolerance_change`` on |dE| in
            Hartree and on the step in Angstrom.
        max_displacement: optional limit (Angstrom) on any atom's total move in one outer step.
            A move that would pass it is shortened along its own direction (so the quasi-Newton
            pair s = t d stays exact) and the slot ends its outer step there. Not in GOLF's
            L-BFGS path (golf-paper.md §1.3: ``action_norm_limit`` is not applied); None = off.
        min_distance, repair_distance: after each outer step, atom pairs closer than
            ``min_distance`` in the returned geometry are pushed apart symmetrically to
            ``repair_distance`` (Angstrom), in one simultaneous pass like GOLF's environment
            (golf-paper.md §1.2). ``min_distance=0`` turns it off.
        repair_mode: "golf" (default, as GOLF's code): the repair acts on a copy; the returned
            geometry is the optimiser's plus all repairs so far, and the optimiser continues on
            its own unrepaired path (its history stays consistent). "continue": the optimiser
            continues from the repaired geometry, as if the parameter of ``torch.optim.LBFGS``
            had been edited between steps.
        dtype, device: of positions, gradients and history (GOLF: float32 on the CPU).
    """

    def __init__(
        self,
        energy_forces: EnergyForces,
        *,
        batch_size: int = 64,
        lr: float = 1.0,
        max_iter: int = 5,
        max_eval: int | None = None,
        history_size: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        max_displacement: float | None = None,
        min_distance: float = 0.7,
        repair_distance: float = 0.75,
        repair_mode: str = "golf",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        if batch_size < 1:
            raise OptimizeError(f"batch_size must be >= 1, got {batch_size}")
        if not lr > 0:
            raise OptimizeError(f"lr must be > 0, got {lr}")
        if max_iter < 1:
            raise OptimizeError(f"max_iter must be >= 1, got {max_iter}")
        if history_size < 1:
            raise OptimizeError(f"history_size must be >= 1, got {history_size}")
        if max_displacement is not None and not max_displacement > 0:
            raise OptimizeError(f"max_displacement must be > 0 Angstrom or None, got {max_displacement}")
        if min_distance < 0 or (min_distance > 0 and repair_distance < min_distance):
            raise OptimizeError(
                f"need 0 <= min_distance <= repair_distance, got min_distance={min_distance}, "
                f"repair_distance={repair_distance}"
            )
        if repair_mode not in ("golf", "continue"):
            raise OptimizeError(f"repair_mode must be 'golf' or 'continue', got {repair_mode!r}")
        if dtype not in (torch.float32, torch.float64):
            raise OptimizeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.energy_forces = energy_forces
        self.batch_size = batch_size
        self.lr = float(lr)
        self.max_iter = int(max_iter)
        self.max_eval = int(max_eval) if max_eval is not None else self.max_iter * 5 // 4
        self.history_size = int(history_size)
        self.tolerance_grad = float(tolerance_grad)
        self.tolerance_change = float(tolerance_change)
        self.max_displacement = None if max_displacement is None else float(max_displacement)
        self.min_distance = float(min_distance)
        self.repair_distance = float(repair_distance)
        self.repair_mode = repair_mode
        self.dtype = dtype
        self.device = torch.device(device)
        self._init_state()

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        """Every mutable tensor, in one place. Atom dimensions start at 0 and grow in add()."""
        B, H, dev, dt = self.batch_size, self.history_size, self.device, self.dtype
        i64 = dict(dtype=torch.int64, device=dev)
        self._keys: list[Any] = [None] * B
        self._occupied = torch.zeros(B, dtype=torch.bool, device=dev)
        self._stopped = torch.zeros(B, dtype=torch.bool, device=dev)  # non-finite: waits for remove()
        self._n_atoms = torch.zeros(B, **i64)
        self._species = torch.full((B, 0), -1, **i64)  # (B, N)
        self._x = torch.zeros(B, 0, 3, dtype=dt, device=dev)  # (B, N, 3) the optimiser's positions
        self._offset = torch.zeros_like(self._x)  # (B, N, 3) accumulated repairs (repair_mode "golf")
        self._g = torch.zeros_like(self._x)  # (B, N, 3) gradient at _x (= -forces)
        self._loss = torch.zeros(B, dtype=torch.float64, device=dev)  # energy at _x (torch keeps a float)
        self._has_eval = torch.zeros(B, dtype=torch.bool, device=dev)  # _g/_loss belong to _x
        # torch.optim.LBFGS state, one row per slot
        self._d = torch.zeros_like(self._x)  # (B, N, 3)
        self._t = torch.zeros(B, dtype=dt, device=dev)
        self._prev_g = torch.zeros_like(self._x)  # (B, N, 3) prev_flat_grad
        self._prev_loss = torch.zeros(B, dtype=torch.float64, device=dev)
        self._H_diag = torch.ones(B, dtype=dt, device=dev)
        self._n_iter = torch.zeros(B, **i64)  # state["n_iter"]: total inner iterations
        self._func_evals = torch.zeros(B, **i64)  # state["func_evals"]
        # history ring buffer: old_stps (S), old_dirs (Y); A[b, i, j] = s_i . y_j (ro = 1 / diag)
        self._S = torch.zeros(B, H, 0, 3, dtype=dt, device=dev)  # (B, H, N, 3)
        self._Y = torch.zeros_like(self._S)
        self._A = torch.eye(H, dtype=dt, device=dev).repeat(B, 1, 1)  # (B, H, H), identity where unused
        self._count = torch.zeros(B, **i64)  # pairs stored
        self._head = torch.zeros(B, **i64)  # physical index of the next write
        self._arange_h = torch.arange(H, device=dev)
        self._not_pair: Tensor | None = None  # (B, N, N) 0 for real atom pairs, inf otherwise (repair)

    def _grow_atoms(self, n: int) -> None:
        """Pad every per-atom tensor to n atoms (padding = 0.0, species -1)."""
        N = self._x.shape[1]
        if n <= N:
            return
        pad = n - N
        self._species = torch.nn.functional.pad(self._species, (0, pad), value=-1)
        for name in ("_x", "_offset", "_g", "_d", "_prev_g"):
            setattr(self, name, torch.nn.functional.pad(getattr(self, name), (0, 0, 0, pad)))
        for name in ("_S", "_Y"):
            setattr(self, name, torch.nn.functional.pad(getattr(self, name), (0, 0, 0, pad)))

    @property
    def n_atoms_max(self) -> int:
        """N, the padded atom count."""
        return self._x.shape[1]

    @property
    def occupied(self) -> Tensor:
        """(B,) bool: slots holding a conformation."""
        return self._occupied.clone()

    @property
    def n_free(self) -> int:
        return int((~self._occupied).sum())

    def key(self, slot: int) -> Any:
        return self._keys[slot]

    def add(self, species, coordinates, key: Any = None) -> int:
        """Load a conformation into a free slot with a fresh optimiser state; return the slot.

        Args:
            species: (n,) atomic numbers.
            coordinates: (n, 3) Angstrom.
            key: anything; reported back with the slot's results.
        """
        species = torch.as_tensor(np.asarray(species), dtype=torch.int64).reshape(-1)
        try:
            coordinates = torch.as_tensor(np.asarray(coordinates, dtype=np.float64)).reshape(-1, 3)
        except (ValueError, TypeError) as err:
            raise OptimizeError(f"coordinates of {key!r} are not an (n, 3) array of numbers: {err}") from None
        n = species.numel()
        if n == 0:
            raise OptimizeError(f"conformation {key!r} has no atoms")
        if coordinates.shape[0] != n:
            raise OptimizeError(f"conformation {key!r}: {n} species but {coordinates.shape[0]} coordinate rows")
        if (species < 1).any():
            raise OptimizeError(f"conformation {key!r}: species must be atomic numbers >= 1")
        free = (~self._occupied).nonzero()
        if free.numel() == 0:
            raise OptimizeError(f"no free slot for {key!r}: all {self.batch_size} slots are occupied")
        b = int(free[0])
        self._grow_atoms(n)
        self._reset_slot(b)
        self._keys[b] = key
        self._occupied[b] = True
        self._n_atoms[b] = n
        self._species[b, :n] = species.to(self.device)
        self._x[b, :n] = coordinates.to(self.device, self.dtype)
        self._not_pair = None
        return b

    def remove(self, slot: int) -> None:
        """Free a slot (its state is reset when the slot is next filled)."""
        if not 0 <= slot < self.batch_size or not bool(self._occupied[slot]):
            raise OptimizeError(f"slot {slot} is not occupied")
        self._occupied[slot] = False
        self._keys[slot] = None

    def _reset_slot(self, b: int) -> None:
        self._stopped[b] = False
        self._has_eval[b] = False
        self._species[b] = -1
        for name in ("_x", "_offset", "_g", "_d", "_prev_g", "_S", "_Y"):
            getattr(self, name)[b] = 0
        self._A[b] = torch.eye(self.history_size, dtype=self.dtype, device=self.device)
        self._t[b] = self.lr
        self._loss[b] = 0
        self._prev_loss[b] = 0
        self._H_diag[b] = 1
        for name in ("_n_iter", "_func_evals", "_count", "_head"):
            getattr(self, name)[b] = 0

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, mask: Tensor, evals: Tensor) -> None:
        """Energies and gradients at _x for the slots in mask, in one call of energy_forces.

        Slots with non-finite positions are not evaluated; they and slots whose energy or forces
        come back non-finite are stopped, so they never enter the batch again.
        """
        idx = mask.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        finite = torch.isfinite(self._x[idx]).flatten(1).all(1)
        if not bool(finite.all()):
            bad = idx[~finite]
            self._stopped[bad] = True
            self._loss[bad] = float("nan")
            self._g[bad] = float("nan")
            idx = idx[finite]
            if idx.numel() == 0:
                return
        n = int(self._n_atoms[idx].max())
        energies, forces, ok = self._call(idx, self._x[idx, :n])
        self._loss[idx] = energies
        self._g[idx, :n] = -forces  # the gradient is minus the forces
        self._has_eval[idx] = True
        self._func_evals[idx] += 1
        evals[idx] += 1
        self._stopped[idx[~ok]] = True

    def _call(self, idx: Tensor, coordinates: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """energy_forces on slots idx at coordinates (k, n, 3): energies (k,) float64, forces, ok (k,)."""
        n = coordinates.shape[1]
        species = self._species[idx, :n]  # (k, n)
        with torch.enable_grad():
            energies, forces = self.energy_forces(species, coordinates)
        energies = energies.detach().to(self.device, torch.float64).reshape(-1)
        forces = forces.detach().to(self.device, self.dtype)
        if energies.shape != (idx.numel(),) or forces.shape != (idx.numel(), n, 3):
            raise OptimizeError(
                f"energy_forces returned energies {tuple(energies.shape)} and forces {tuple(forces.shape)} "
                f"for a batch of {idx.numel()} conformations of {n} atoms"
            )
        forces = forces * (species >= 0).unsqueeze(-1)  # padded atoms never move
        ok = torch.isfinite(energies) & torch.isfinite(forces).flatten(1).all(1)
        return energies, forces, ok

    # ------------------------------------------------------------------ L-BFGS pieces
    def _push_history(self, upd: Tensor, s: Tensor, y: Tensor, ys: Tensor) -> None:
        """Append the pair (s, y) for the slots in upd, dropping the oldest when full.

        S and Y are ring buffers (physical order); A is kept in logical order (oldest first), with
        the identity on unused rows and columns. Only A's upper triangle is ever read.
        """
        idx = upd.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        B, H = self.batch_size, self.history_size
        full = idx[self._count[idx] == H]
        if full.numel() == B:  # forget the oldest pair: shift A up-left by one (a slice is cheaper)
            self._A[:, :-1, :-1] = self._A[:, 1:, 1:].clone()
        elif full.numel():
            self._A[full, :-1, :-1] = self._A[full, 1:, 1:]
        p = self._head[idx]  # (k,) physical slot of the new pair
        self._S[idx, p] = s[idx]
        self._Y[idx, p] = y[idx]
        count = torch.clamp(self._count[idx] + 1, max=H)
        # new column of A in logical order: A[i, new] = s_i . y_new (0 for unused i, whose s_i = 0)
        col = torch.bmm(self._S.view(B, H, -1), y.reshape(B, -1, 1)).squeeze(-1)[idx]  # (k, H) physical
        start = (p + 1 - count) % H
        col = col.gather(1, (start[:, None] + self._arange_h[None, :]) % H)  # (k, H) logical
        q = count - 1  # logical position of the new pair
        self._A[idx, :, q] = col
        self._A[idx, q, q] = ys[idx]  # exactly torch's y.s, whose inverse is ro
        self._head[idx] = (p + 1) % H
        self._count[idx] = count

    def _two_loop(self, q0: Tensor) -> Tensor:
        """L-BFGS direction H_k q0 for every slot (B, N, 3); q0 = -g. See the module docstring."""
        B, H = self.batch_size, self.history_size
        q0 = q0.reshape(B, -1)  # (B, M)
        wrapped = bool((self._count == H).any())
        h = H if wrapped else int(self._count.max())  # unwrapped: physical order is logical order
        r0 = q0 * self._H_diag[:, None]
        if h == 0:
            return r0.view_as(self._x)
        S = self._S.view(B, H, -1)[:, :h]  # (B, h, M)
        Y = self._Y.view(B, H, -1)[:, :h]
        A = self._A[:, :h, :h]  # (B, h, h) logical order
        if wrapped:
            start = (self._head - self._count) % H
            perm = (start[:, None] + self._arange_h[None, :]) % H  # (B, H): logical -> physical

            def logical(v):
                return v.gather(1, perm)

            def physical(v):
                return torch.zeros_like(v).scatter_(1, perm, v)

        else:

            def logical(v):
                return v

            physical = logical
        Sq = logical(torch.bmm(S, q0.unsqueeze(-1)).squeeze(-1))  # (B, h)
        # first loop: al_i = ro_i s_i.(q0 - sum_{j>i} al_j y_j)  <=>  triu(A) al = S q0
        al = torch.linalg.solve_triangular(A, Sq.unsqueeze(-1), upper=True).squeeze(-1)  # (B, h)
        q = q0 - torch.bmm(physical(al).unsqueeze(1), Y).squeeze(1)  # (B, M)
        r0 = q * self._H_diag[:, None]  # multiply by the initial Hessian
        Yr = logical(torch.bmm(Y, r0.unsqueeze(-1)).squeeze(-1))  # (B, h)
        # second loop: be_i = ro_i y_i.(r0 + sum_{j<i} c_j s_j), c = al - be
        #   <=>  tril(A^T) c = diag(A) al - Y r0
        rhs = torch.diagonal(A, dim1=1, dim2=2) * al - Yr
        c = torch.linalg.solve_triangular(A.mT, rhs.unsqueeze(-1), upper=False).squeeze(-1)
        d = r0 + torch.bmm(physical(c).unsqueeze(1), S).squeeze(1)  # (B, M)
        return d.view_as(self._x)

    def _cap_factor(self, moved: Tensor, step: Tensor) -> Tensor:
        """(B,) largest c in [0, 1] with every atom's |moved + c step| <= max_displacement."""
        L2 = self.max_displacement**2
        aa = (moved * moved).sum(-1)  # (B, N)
        ab = (moved * step).sum(-1)
        bb = (step * step).sum(-1)
        inside = aa + 2 * ab + bb <= L2
        # positive root of bb c^2 + 2 ab c + (aa - L2) = 0; aa <= L2 because earlier moves were capped
        disc = torch.clamp(ab * ab - bb * torch.clamp(aa - L2, max=0), min=0)
        c = (torch.sqrt(disc) - ab) / torch.where(bb > 0, bb, torch.ones_like(bb))
        c = torch.where(inside, torch.ones_like(c), c)
        return torch.clamp(c.amin(1), 0, 1)

    def _repair(self, pos: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """GOLF's repair of atom pairs closer than min_distance in pos (B, N, 3).

        Returns (B,) repaired and the (B, N, 3) displacement that repairs them (None if none).
        """
        repaired = torch.zeros_like(mask)
        if self.min_distance <= 0 or pos.shape[1] < 2:
            return repaired, None
        N = pos.shape[1]
        if self._not_pair is None or self._not_pair.shape[1] != N:  # cached until add() changes species
            real = self._species >= 0  # (B, N)
            pair = real[:, :, None] & real[:, None, :] & ~torch.eye(N, dtype=torch.bool, device=self.device)
            self._not_pair = torch.where(pair, 0.0, torch.inf).to(self.dtype)  # (B, N, N)
        r = torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")  # (B, N, N)
        repaired = ((r + self._not_pair) < self.min_distance).flatten(1).any(1) & mask
        if not bool(repaired.any()):
            return repaired, None
        idx = repaired.nonzero().squeeze(1)  # rare: work on these slots only
        x = pos[idx]  # (k, N, 3)
        diff = x[:, None, :, :] - x[:, :, None, :]  # (k, N, N, 3): diff[b, i, j] = x_j - x_i
        r = diff.norm(dim=-1)  # (k, N, N)
        close = (r + self._not_pair[idx]) < self.min_distance
        # coincident atoms have no direction: separate them along x, the lower index going -x
        ar = torch.arange(N, device=self.device)
        fallback = torch.zeros_like(diff)
        fallback[..., 0] = torch.sign(ar[None, :] - ar[:, None]).to(x.dtype)  # +1 where i < j
        unit = torch.where((r > 1e-8)[..., None], diff / torch.clamp(r, min=1e-8)[..., None], fallback)
        coef = torch.where(close, self.repair_distance - r, torch.zeros_like(r))  # (k, N, N)
        # each atom of a close pair moves half the shortfall away from the other (moldynamics_env.py)
        delta = torch.zeros_like(pos)
        delta[idx] = -0.5 * (coef[..., None] * unit).sum(2)
        return repaired, delta

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self) -> StepResult:
        """One outer step: ``torch.optim.LBFGS.step(closure)`` for every occupied, finite slot.

        Up to ``max_iter`` position updates per slot, one batched evaluation per inner iteration
        for the slots still iterating, then the close-atom repair and, where the returned
        geometry has no evaluation yet, one more batched evaluation (which the next step reuses as
        torch's initial closure call, so the total cost per step is that of torch's LBFGS).
        """
        run = self._occupied & ~self._stopped
        B = self.batch_size
        evals = torch.zeros(B, dtype=torch.int64, device=self.device)
        iters = torch.zeros_like(evals)
        capped = torch.zeros_like(run)
        started = run & (self._func_evals == 0)

        # torch: orig_loss = closure(); if max|g| <= tolerance_grad: return
        self._evaluate(run & ~self._has_eval, evals)
        run_ok = run & ~self._stopped
        start_energies = self._loss.clone()
        start_forces = -self._g
        iterating = run_ok & (self._g.abs().flatten(1).amax(1) > self.tolerance_grad)
        current_evals = torch.ones_like(evals)
        x_start = self._x.clone() if self.max_displacement is not None else None

        for n_iter in range(1, self.max_iter + 1):
            if not bool(iterating.any()):
                break
            self._n_iter += iterating
            iters += iterating
            first = iterating & (self._n_iter == 1)
            later = iterating & ~first
            g = self._g
            # update memory with the pair from the previous iteration (possibly the previous step)
            y = g - self._prev_g
            s = self._d * self._t[:, None, None]
            ys = _dot(y, s)
            upd = later & (ys > _YS_MIN)  # torch keeps a pair only when y.s > 1e-10
            self._push_history(upd, s, y, ys)
            self._H_diag = torch.where(upd, ys / _dot(y, y).clamp(min=torch.finfo(self.dtype).tiny), self._H_diag)
            self._H_diag = torch.where(first, torch.ones_like(self._H_diag), self._H_diag)
            # (a first iteration finds the history empty: add() reset it)
            if bool(later.any()):
                d = torch.where(later[:, None, None], self._two_loop(-g), self._d)
            else:
                d = self._d
            self._d = torch.where(first[:, None, None], -g, d)
            self._prev_g = torch.where(iterating[:, None, None], g, self._prev_g)
            self._prev_loss = torch.where(iterating, self._loss, self._prev_loss)
            # step length: min(1, 1/|g|_1) lr on a conformation's very first iteration, lr after
            t_first = torch.clamp(1.0 / g.abs().flatten(1).sum(1), max=1.0) * self.lr
            self._t = torch.where(first, t_first, torch.where(later, torch.full_like(self._t, self.lr), self._t))
            gtd = _dot(g, self._d)
            moving = iterating & ~(gtd > -self.tolerance_change)  # directional derivative too small: break
            step = self._d * self._t[:, None, None]
            cap_now = torch.zeros_like(moving)
            if x_start is not None:
                c = self._cap_factor(self._x - x_start, step)
                cap_now = moving & (c < 1)
                self._t = torch.where(cap_now, self._t * c, self._t)
                step = self._d * self._t[:, None, None]
                capped |= cap_now
            self._x = torch.where(moving[:, None, None], self._x + step, self._x)
            if n_iter == self.max_iter:
                # torch does not evaluate after the last inner move; the end of step() does
                self._has_eval &= ~moving
                break
            self._evaluate(moving, evals)
            current_evals += moving
            moving &= ~self._stopped
            stop = (
                (current_evals >= self.max_eval)
                | (self._g.abs().flatten(1).amax(1) <= self.tolerance_grad)
                | (step.abs().flatten(1).amax(1) <= self.tolerance_change)
                | ((self._loss - self._prev_loss).abs() < self.tolerance_change)
                | cap_now
            )
            iterating = moving & ~stop

        live = run & ~self._stopped
        if self.repair_mode == "continue":  # the optimiser continues from the repaired geometry
            repaired, delta = self._repair(self._x, live)
            if delta is not None:
                self._x = self._x + delta
                self._has_eval &= ~repaired
        else:  # GOLF: repair a copy (positions + accumulated repairs); the optimiser keeps its own path
            repaired, delta = self._repair(self._x + self._offset, live)
            if delta is not None:
                self._offset = self._offset + delta
        self._evaluate(live & ~self._has_eval, evals)  # the next step's initial closure call
        energies, forces = self._loss.clone(), -self._g
        shifted = live & ~self._stopped & (self._offset != 0).flatten(1).any(1)
        if bool(shifted.any()):  # E/F of the returned (repaired) geometry: one extra call, those slots only
            idx = shifted.nonzero().squeeze(1)
            n = int(self._n_atoms[idx].max())
            e, f, ok = self._call(idx, (self._x + self._offset)[idx, :n])
            energies[idx] = e
            forces = forces.clone()
            forces[idx, :n] = f
            evals[idx] += 1
            self._stopped[idx[~ok]] = True
        return self._result(
            run, started, start_energies, start_forces, energies, forces, repaired, capped, iters, evals
        )

    def _result(
        self, run, started, start_energies, start_forces, energies, forces, repaired, capped, iters, evals
    ) -> StepResult:
        idx = run.nonzero().squeeze(1)
        converged = forces.abs().flatten(1).amax(1) <= self.tolerance_grad
        code = torch.where(self._stopped, 2, torch.where(converged, 1, 0))[idx].tolist()
        names = (_RUNNING, _CONVERGED, _NONFINITE)
        n = int(self._n_atoms[idx].max()) if idx.numel() else 0
        cpu = dict(device="cpu")
        return StepResult(
            slots=idx.to(**cpu),
            keys=[self._keys[int(b)] for b in idx.tolist()],
            n_atoms=self._n_atoms[idx].to(**cpu),
            species=self._species[idx, :n].to(**cpu),
            positions=(self._x + self._offset)[idx, :n].to(**cpu),
            energies=energies[idx].to(**cpu),
            forces=forces[idx, :n].to(**cpu),
            start_energies=start_energies[idx].to(**cpu),
            start_forces=start_forces[idx, :n].to(**cpu),
            status=[names[c] for c in code],
            started=started[idx].to(**cpu),
            repaired=repaired[idx].to(**cpu),
            capped=capped[idx].to(**cpu),
            iterations=iters[idx].to(**cpu),
            evaluations=evals[idx].to(**cpu),
        )


# ---------------------------------------------------------------------- streaming driver
@dataclass
class Trajectory:
    """One conformation's optimisation. Row 0 is the start geometry, row k the one after step k."""

    key: Any
    species: np.ndarray  # (n,) atomic numbers
    positions: np.ndarray  # (T + 1, n, 3) Angstrom
    energies: np.ndarray  # (T + 1,) Hartree
    forces: np.ndarray  # (T + 1, n, 3) Hartree/Angstrom
    repaired: np.ndarray  # (T + 1,) bool, False at row 0
    status: str  # final status, from golf.data.STATUSES
    evaluations: int = 0  # energy/forces evaluations spent on it

    @property
    def n_steps(self) -> int:
        return len(self.energies) - 1


@dataclass
class _Growing:
    key: Any
    species: np.ndarray
    positions: list = field(default_factory=list)
    energies: list = field(default_factory=list)
    forces: list = field(default_factory=list)
    repaired: list = field(default_factory=list)
    evaluations: int = 0

    def finish(self, status: str) -> Trajectory:
        return Trajectory(
            self.key,
            self.species,
            np.stack(self.positions),
            np.asarray(self.energies, dtype=np.float64),
            np.stack(self.forces),
            np.asarray(self.repaired, dtype=bool),
            status,
            self.evaluations,
        )


def optimize(
    energy_forces: EnergyForces,
    species_list: Sequence,
    coords_list: Sequence,
    steps: int,
    batch_size: int = 64,
    *,
    keys: Sequence | None = None,
    should_stop: Callable[[StepResult], Any] | None = None,
    callback: Callable[[StepResult], None] | None = None,
    progress: bool = False,
    **optimizer_kwargs,
) -> list[Trajectory]:
    """Optimise many conformations, streaming them through a :class:`BatchedLBFGS` batch.

    Each conformation gets up to ``steps`` outer steps (GOLF's trajectory steps); its trajectory
    ends early when it converges, turns non-finite, or ``should_stop(result)`` returns True for it
    (an array-like of k bools, one per slot of the result; such a trajectory keeps status
    "running"). Free slots are refilled from the queue before every step.

    Args:
        species_list: per conformation, (n_i,) atomic numbers.
        coords_list: per conformation, (n_i, 3) Angstrom.
        keys: optional per-conformation keys (default: the index); reported in the trajectories.
        callback: called with every :class:`StepResult` (logging, progress).
        optimizer_kwargs: passed to :class:`BatchedLBFGS` (lr, max_iter, dtype, device, ...).

    Returns:
        One :class:`Trajectory` per input conformation, in input order.
    """
    if len(species_list) != len(coords_list):
        raise OptimizeError(f"{len(species_list)} species arrays but {len(coords_list)} coordinate arrays")
    if steps < 1:
        raise OptimizeError(f"steps must be >= 1, got {steps}")
    keys = list(range(len(species_list))) if keys is None else list(keys)
    if len(keys) != len(species_list):
        raise OptimizeError(f"{len(keys)} keys for {len(species_list)} conformations")
    opt = BatchedLBFGS(energy_forces, batch_size=max(1, min(batch_size, len(species_list))), **optimizer_kwargs)
    queue = deque(range(len(species_list)))
    growing: dict[int, _Growing] = {}  # slot -> trajectory so far
    index_of: dict[int, int] = {}  # slot -> input index
    done: dict[int, Trajectory] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(species_list), desc="optimize", unit="conf")

    while queue or growing:
        while queue and opt.n_free:
            i = queue.popleft()
            slot = opt.add(species_list[i], coords_list[i], keys[i])
            growing[slot] = _Growing(keys[i], np.asarray(species_list[i], dtype=np.int64).reshape(-1))
            index_of[slot] = i
        res = opt.step()
        stop_policy = np.zeros(len(res), dtype=bool)
        if should_stop is not None and len(res):
            stop_policy = np.asarray(should_stop(res), dtype=bool).reshape(len(res))
        if callback is not None:
            callback(res)
        for k, slot in enumerate(res.slots.tolist()):
            tr = growing[slot]
            if bool(res.started[k]):  # row 0: the start geometry and its evaluation
                tr.positions.append(np.asarray(coords_list[index_of[slot]], dtype=np.float64).reshape(-1, 3))
                tr.energies.append(float(res.start_energies[k]))
                tr.forces.append(res.start_forces[k, : int(res.n_atoms[k])].numpy().astype(np.float64))
                tr.repaired.append(False)
            tr.positions.append(res.positions_of(k).astype(np.float64))
            tr.energies.append(float(res.energies[k]))
            tr.forces.append(res.forces_of(k).astype(np.float64))
            tr.repaired.append(bool(res.repaired[k]))
            tr.evaluations += int(res.evaluations[k])
            status = res.status[k]
            if status != _RUNNING or len(tr.energies) - 1 >= steps or stop_policy[k]:
                done[index_of[slot]] = tr.finish(status)
                del growing[slot], index_of[slot]
                opt.remove(slot)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return [done[i] for i in range(len(species_list))]
