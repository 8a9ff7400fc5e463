"""Batched L-BFGS: many conformations of different molecules optimised together, each with its own history.

GOLF moves every conformation with ``torch.optim.LBFGS`` at torch's default settings, one
``.step(closure)`` per trajectory step, with one optimiser (and so one history) per trajectory
(reference/golf-paper.md §1.3). This module does exactly that for a whole batch at once, in the
shape of ASE's ``optimize/lbfgs.py`` and torch-sim's batched optimisers:

- :class:`LBFGSSettings`: torch.optim.LBFGS's arguments (lr 1, max_iter 5, max_eval 6, history 100,
  tolerance_grad 1e-7, tolerance_change 1e-9; no line search), checked once.
- :class:`LBFGSState`: every mutable tensor of a batch, created in one place (one row per slot).
- :func:`lbfgs_iteration` / :func:`inner_iteration_done`: the algorithm, pure functions of
  (state, settings) and the energies/gradients already in the state; they never call the model.
- :class:`DisplacementCap` and :class:`CloseAtomRepair`: small policies passed in (GOLF's
  environment repairs close atoms; the cap is this project's addition, off in the paper protocol).
- :class:`BatchedLBFGS`: the driver: slots (add/remove), model calls, one outer step.
- :func:`run_stream`: THE streaming loop (fill free slots, step, retire ended trajectories), used by
  :func:`optimize` (evaluation, ``golf optimize``) and by :mod:`golf.active.explore` (GOLF rounds).

A slot's inner iterations make ONE call of the energy/forces function for every slot still
iterating; a slot that hits a break condition early waits, masked, until the outer step ends.

Precision: positions, gradients and the history are float64 by default even for a float32 model
(which casts them). A float32 state made a conformation's trajectory depend on its batch: the
history kernels (bmm over the padded batch, solves over the batch's longest history) round
differently for different batch shapes, and L-BFGS at lr 1 without line search amplifies that
round-off (0.01 Angstrom after 100 steps on a smooth potential, more on an untrained NNP). In
float64 the optimiser's own part is ~1e-10 Angstrom; what remains is the model's float32
round-off, which depends on the padded batch (about 1e-7 relative).

Shape legend: B slots, N padded atoms, M = 3N flat coordinates, H history size. Padding follows
TorchANI: ``species == -1``; padded atoms have coordinates, gradients, directions and history 0.0.

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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
import torchani.grad
from torch import Tensor

from golf.data.dataset import STATUSES
from golf.data.molecule import set_positions

__all__ = [
    "OptimizeError",
    "EnergyForces",
    "LBFGSSettings",
    "DisplacementCap",
    "CloseAtomRepair",
    "LBFGSState",
    "lbfgs_iteration",
    "inner_iteration_done",
    "StepResult",
    "BatchedLBFGS",
    "run_stream",
    "Trajectory",
    "optimize",
    "bond_change",
    "energy_forces_from_energy",
    "optimizer_meta",
    "optimizer_settings",
    "optimize_with_model",
    "CONVERGED",
    "STEP_LIMIT",
    "NONFINITE",
    "BROKEN",
    "FRAGMENTED",
]

# (species (B, N) int64, -1 padding; coordinates (B, N, 3) Angstrom) -> (energies (B,) Hartree,
# forces (B, N, 3) Hartree/Angstrom)
EnergyForces = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

# Per-step status of a slot (StepResult.status): still going, or why it ended by itself.
RUNNING = "running"
CONVERGED = "converged"  # max |F| at or below the convergence threshold, bonds as in the input
NONFINITE = "skipped_nonfinite"
# Final statuses of a trajectory (Trajectory.status) besides CONVERGED and NONFINITE.
STEP_LIMIT = "step_limit"  # ran its steps without converging
BROKEN = "broken"  # the bond graph differs from the input's (a bond broke or formed)
FRAGMENTED = "fragmented"  # the molecule fell apart into more pieces than the input had
assert {RUNNING, CONVERGED, NONFINITE, STEP_LIMIT, BROKEN, FRAGMENTED} <= set(STATUSES)

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
            forces = torchani.grad.forces(energies, coordinates)
        return energies.detach(), forces

    return energy_forces


# ---------------------------------------------------------------------- settings and policies
@dataclass(frozen=True)
class LBFGSSettings:
    """``torch.optim.LBFGS``'s arguments; the defaults are torch's, which GOLF uses (golf-paper.md §1.3).

    ``max_eval`` defaults to ``max_iter * 5 // 4`` (torch). No line search (GOLF uses none).
    ``tolerance_grad`` is on max |g| in Hartree/Angstrom, ``tolerance_change`` on |dE| in Hartree
    and on the step in Angstrom.
    """

    lr: float = 1.0
    max_iter: int = 5
    max_eval: int | None = None
    history_size: int = 100
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9

    def __post_init__(self):
        if not self.lr > 0:
            raise OptimizeError(f"lr must be > 0, got {self.lr}")
        if self.max_iter < 1:
            raise OptimizeError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.history_size < 1:
            raise OptimizeError(f"history_size must be >= 1, got {self.history_size}")
        if self.max_eval is None:
            object.__setattr__(self, "max_eval", self.max_iter * 5 // 4)
        if self.max_eval < 1:
            raise OptimizeError(f"max_eval must be >= 1, got {self.max_eval}")


@dataclass(frozen=True)
class DisplacementCap:
    """No atom moves more than ``max_displacement`` Angstrom in one outer step.

    A move that would pass it is shortened along its own direction (so the quasi-Newton pair
    s = t d stays exact) and the slot ends its outer step there. Not in GOLF's L-BFGS path
    (golf-paper.md §1.3: ``action_norm_limit`` is not applied).
    """

    max_displacement: float

    def __post_init__(self):
        if not self.max_displacement > 0:
            raise OptimizeError(f"max_displacement must be > 0 Angstrom or None, got {self.max_displacement}")

    def factor(self, moved: Tensor, step: Tensor) -> Tensor:
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


@dataclass(frozen=True)
class CloseAtomRepair:
    """GOLF's repair: atom pairs closer than ``min_distance`` are pushed apart symmetrically to
    ``repair_distance`` (Angstrom), in one simultaneous pass (golf-paper.md §1.2).

    ``mode`` "golf" (GOLF's code): the repair acts on a copy; the returned geometry is the
    optimiser's plus all repairs so far, and the optimiser continues on its own unrepaired path
    (its history stays consistent). "continue": the optimiser continues from the repaired
    geometry, as if the parameter of ``torch.optim.LBFGS`` had been edited between steps.
    """

    min_distance: float = 0.7
    repair_distance: float = 0.75
    mode: str = "golf"

    def __post_init__(self):
        if not 0 < self.min_distance <= self.repair_distance:
            raise OptimizeError(
                f"need 0 < min_distance <= repair_distance, got min_distance={self.min_distance}, "
                f"repair_distance={self.repair_distance}"
            )
        if self.mode not in ("golf", "continue"):
            raise OptimizeError(f"repair_mode must be 'golf' or 'continue', got {self.mode!r}")

    def displacement(self, pos: Tensor, not_pair: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B,) repaired and the (B, N, 3) displacement that repairs pos (None if nothing to repair).

        ``not_pair`` (B, N, N) is 0 for pairs of real atoms, inf otherwise; ``mask`` selects slots.
        """
        repaired = torch.zeros_like(mask)
        N = pos.shape[1]
        if N < 2:
            return repaired, None
        r = torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")  # (B, N, N)
        repaired = ((r + not_pair) < self.min_distance).flatten(1).any(1) & mask
        if not bool(repaired.any()):
            return repaired, None
        idx = repaired.nonzero().squeeze(1)  # rare: work on these slots only
        x = pos[idx]  # (k, N, 3)
        diff = x[:, None, :, :] - x[:, :, None, :]  # (k, N, N, 3): diff[b, i, j] = x_j - x_i
        r = diff.norm(dim=-1)  # (k, N, N)
        close = (r + not_pair[idx]) < self.min_distance
        # coincident atoms have no direction: separate them along x, the lower index going -x
        ar = torch.arange(N, device=pos.device)
        fallback = torch.zeros_like(diff)
        fallback[..., 0] = torch.sign(ar[None, :] - ar[:, None]).to(x.dtype)  # +1 where i < j
        unit = torch.where((r > 1e-8)[..., None], diff / torch.clamp(r, min=1e-8)[..., None], fallback)
        coef = torch.where(close, self.repair_distance - r, torch.zeros_like(r))  # (k, N, N)
        # each atom of a close pair moves half the shortfall away from the other (moldynamics_env.py)
        delta = torch.zeros_like(pos)
        delta[idx] = -0.5 * (coef[..., None] * unit).sum(2)
        return repaired, delta


# ---------------------------------------------------------------------- state
@dataclass
class LBFGSState:
    """All mutable tensors of a batch, one row per slot; atom dimensions grow in :meth:`grow_atoms`.

    The torch.optim.LBFGS state of each slot is ``d``, ``t``, ``prev_g`` (prev_flat_grad),
    ``prev_loss``, ``H_diag``, ``n_iter``, ``func_evals`` and the history: ``S`` (old_stps) and
    ``Y`` (old_dirs) as ring buffers, ``A[b, i, j] = s_i . y_j`` in logical order (ro = 1 / diag).
    """

    keys: list[Any]
    occupied: Tensor  # (B,) bool
    stopped: Tensor  # (B,) bool, non-finite: waits for remove()
    n_atoms: Tensor  # (B,) int64
    species: Tensor  # (B, N) int64, -1 padding
    x: Tensor  # (B, N, 3) the optimiser's positions
    offset: Tensor  # (B, N, 3) accumulated repairs (repair mode "golf")
    g: Tensor  # (B, N, 3) gradient at x (= -forces)
    loss: Tensor  # (B,) float64 energy at x (torch keeps a float)
    has_eval: Tensor  # (B,) bool: g/loss belong to x
    d: Tensor  # (B, N, 3)
    t: Tensor  # (B,)
    prev_g: Tensor  # (B, N, 3)
    prev_loss: Tensor  # (B,) float64
    H_diag: Tensor  # (B,)
    n_iter: Tensor  # (B,) int64 total inner iterations
    func_evals: Tensor  # (B,) int64
    S: Tensor  # (B, H, N, 3)
    Y: Tensor  # (B, H, N, 3)
    A: Tensor  # (B, H, H), identity where unused
    count: Tensor  # (B,) int64 pairs stored
    head: Tensor  # (B,) int64 physical index of the next write
    not_pair: Tensor | None = None  # (B, N, N) 0 for real atom pairs, inf otherwise; None = stale

    _PER_ATOM = ("x", "offset", "g", "d", "prev_g")

    @classmethod
    def empty(cls, batch_size: int, history_size: int, dtype: torch.dtype, device: torch.device) -> LBFGSState:
        B, H = batch_size, history_size
        i64 = dict(dtype=torch.int64, device=device)
        xyz = torch.zeros(B, 0, 3, dtype=dtype, device=device)
        return cls(
            keys=[None] * B,
            occupied=torch.zeros(B, dtype=torch.bool, device=device),
            stopped=torch.zeros(B, dtype=torch.bool, device=device),
            n_atoms=torch.zeros(B, **i64),
            species=torch.full((B, 0), -1, **i64),
            x=xyz,
            offset=xyz.clone(),
            g=xyz.clone(),
            loss=torch.zeros(B, dtype=torch.float64, device=device),
            has_eval=torch.zeros(B, dtype=torch.bool, device=device),
            d=xyz.clone(),
            t=torch.zeros(B, dtype=dtype, device=device),
            prev_g=xyz.clone(),
            prev_loss=torch.zeros(B, dtype=torch.float64, device=device),
            H_diag=torch.ones(B, dtype=dtype, device=device),
            n_iter=torch.zeros(B, **i64),
            func_evals=torch.zeros(B, **i64),
            S=torch.zeros(B, H, 0, 3, dtype=dtype, device=device),
            Y=torch.zeros(B, H, 0, 3, dtype=dtype, device=device),
            A=torch.eye(H, dtype=dtype, device=device).repeat(B, 1, 1),
            count=torch.zeros(B, **i64),
            head=torch.zeros(B, **i64),
        )

    @property
    def batch_size(self) -> int:
        return self.occupied.shape[0]

    @property
    def history_size(self) -> int:
        return self.A.shape[1]

    def grow_atoms(self, n: int) -> None:
        """Pad every per-atom tensor to n atoms (padding = 0.0, species -1)."""
        pad = n - self.x.shape[1]
        if pad <= 0:
            return
        self.species = torch.nn.functional.pad(self.species, (0, pad), value=-1)
        for name in (*self._PER_ATOM, "S", "Y"):
            setattr(self, name, torch.nn.functional.pad(getattr(self, name), (0, 0, 0, pad)))
        self.not_pair = None

    def reset(self, b: int, lr: float) -> None:
        """A fresh torch.optim.LBFGS state in slot b."""
        self.stopped[b] = False
        self.has_eval[b] = False
        self.species[b] = -1
        for name in (*self._PER_ATOM, "S", "Y"):
            getattr(self, name)[b] = 0
        self.A[b] = torch.eye(self.history_size, dtype=self.A.dtype, device=self.A.device)
        self.t[b] = lr
        self.loss[b] = 0
        self.prev_loss[b] = 0
        self.H_diag[b] = 1
        for name in ("n_iter", "func_evals", "count", "head"):
            getattr(self, name)[b] = 0
        self.not_pair = None

    def pair_mask(self) -> Tensor:
        """(B, N, N): 0 for pairs of distinct real atoms, inf otherwise (cached until species change)."""
        N = self.x.shape[1]
        if self.not_pair is None or self.not_pair.shape[1] != N:
            real = self.species >= 0
            eye = torch.eye(N, dtype=torch.bool, device=self.x.device)
            pair = real[:, :, None] & real[:, None, :] & ~eye
            self.not_pair = torch.where(pair, 0.0, torch.inf).to(self.x.dtype)
        return self.not_pair


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-slot dot product of two (B, ...) tensors -> (B,)."""
    return (a * b).flatten(1).sum(1)


def _max_abs(a: Tensor) -> Tensor:
    return a.abs().flatten(1).amax(1)


# ---------------------------------------------------------------------- the algorithm (pure)
def _push_history(st: LBFGSState, upd: Tensor, s: Tensor, y: Tensor, ys: Tensor) -> None:
    """Append the pair (s, y) for the slots in upd, dropping the oldest when full.

    S and Y are ring buffers (physical order); A is kept in logical order (oldest first), with
    the identity on unused rows and columns. Only A's upper triangle is ever read.
    """
    idx = upd.nonzero().squeeze(1)
    if idx.numel() == 0:
        return
    B, H = st.batch_size, st.history_size
    full = idx[st.count[idx] == H]
    if full.numel() == B:  # forget the oldest pair: shift A up-left by one (a slice is cheaper)
        st.A[:, :-1, :-1] = st.A[:, 1:, 1:].clone()
    elif full.numel():
        st.A[full, :-1, :-1] = st.A[full, 1:, 1:]
    p = st.head[idx]  # (k,) physical slot of the new pair
    st.S[idx, p] = s[idx]
    st.Y[idx, p] = y[idx]
    count = torch.clamp(st.count[idx] + 1, max=H)
    # new column of A in logical order: A[i, new] = s_i . y_new (0 for unused i, whose s_i = 0)
    col = torch.bmm(st.S.view(B, H, -1), y.reshape(B, -1, 1)).squeeze(-1)[idx]  # (k, H) physical
    start = (p + 1 - count) % H
    arange_h = torch.arange(H, device=st.A.device)
    col = col.gather(1, (start[:, None] + arange_h[None, :]) % H)  # (k, H) logical
    q = count - 1  # logical position of the new pair
    st.A[idx, :, q] = col
    st.A[idx, q, q] = ys[idx]  # exactly torch's y.s, whose inverse is ro
    st.head[idx] = (p + 1) % H
    st.count[idx] = count


def _two_loop(st: LBFGSState, q0: Tensor) -> Tensor:
    """L-BFGS direction H_k q0 for every slot (B, N, 3); q0 = -g. See the module docstring."""
    B, H = st.batch_size, st.history_size
    q0 = q0.reshape(B, -1)  # (B, M)
    wrapped = bool((st.count == H).any())
    h = H if wrapped else int(st.count.max())  # unwrapped: physical order is logical order
    r0 = q0 * st.H_diag[:, None]
    if h == 0:
        return r0.view_as(st.x)
    S = st.S.view(B, H, -1)[:, :h]  # (B, h, M)
    Y = st.Y.view(B, H, -1)[:, :h]
    A = st.A[:, :h, :h]  # (B, h, h) logical order
    if wrapped:
        start = (st.head - st.count) % H
        perm = (start[:, None] + torch.arange(H, device=st.A.device)[None, :]) % H  # (B, H): logical -> physical

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
    r0 = q * st.H_diag[:, None]  # multiply by the initial Hessian
    Yr = logical(torch.bmm(Y, r0.unsqueeze(-1)).squeeze(-1))  # (B, h)
    # second loop: be_i = ro_i y_i.(r0 + sum_{j<i} c_j s_j), c = al - be  <=>  tril(A^T) c = diag(A) al - Y r0
    rhs = torch.diagonal(A, dim1=1, dim2=2) * al - Yr
    c = torch.linalg.solve_triangular(A.mT, rhs.unsqueeze(-1), upper=False).squeeze(-1)
    d = r0 + torch.bmm(physical(c).unsqueeze(1), S).squeeze(1)  # (B, M)
    return d.view_as(st.x)


def lbfgs_iteration(
    st: LBFGSState,
    cfg: LBFGSSettings,
    iterating: Tensor,
    cap: DisplacementCap | None = None,
    x_start: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One inner iteration of torch.optim.LBFGS.step for the slots in ``iterating``, from the
    gradient and loss already in ``st`` (the model is not called here).

    Updates the history with the previous iteration's pair, computes the direction and step length
    and moves ``st.x``. Returns (moving (B,), step (B, N, 3), capped (B,)); ``x_start`` is the
    geometry at the start of the outer step (needed by the cap).
    """
    st.n_iter += iterating
    first = iterating & (st.n_iter == 1)
    later = iterating & ~first
    g = st.g
    # update memory with the pair from the previous iteration (possibly the previous step)
    y = g - st.prev_g
    s = st.d * st.t[:, None, None]
    ys = _dot(y, s)
    upd = later & (ys > _YS_MIN)  # torch keeps a pair only when y.s > 1e-10
    _push_history(st, upd, s, y, ys)
    st.H_diag = torch.where(upd, ys / _dot(y, y).clamp(min=torch.finfo(st.x.dtype).tiny), st.H_diag)
    st.H_diag = torch.where(first, torch.ones_like(st.H_diag), st.H_diag)
    # (a first iteration finds the history empty: add() reset it)
    d = torch.where(later[:, None, None], _two_loop(st, -g), st.d) if bool(later.any()) else st.d
    st.d = torch.where(first[:, None, None], -g, d)
    st.prev_g = torch.where(iterating[:, None, None], g, st.prev_g)
    st.prev_loss = torch.where(iterating, st.loss, st.prev_loss)
    # step length: min(1, 1/|g|_1) lr on a conformation's very first iteration, lr after
    t_first = torch.clamp(1.0 / g.abs().flatten(1).sum(1), max=1.0) * cfg.lr
    st.t = torch.where(first, t_first, torch.where(later, torch.full_like(st.t, cfg.lr), st.t))
    gtd = _dot(g, st.d)
    moving = iterating & ~(gtd > -cfg.tolerance_change)  # directional derivative too small: break
    step = st.d * st.t[:, None, None]
    capped = torch.zeros_like(moving)
    if cap is not None:
        c = cap.factor(st.x - x_start, step)
        capped = moving & (c < 1)
        st.t = torch.where(capped, st.t * c, st.t)
        step = st.d * st.t[:, None, None]
    st.x = torch.where(moving[:, None, None], st.x + step, st.x)
    return moving, step, capped


def inner_iteration_done(
    st: LBFGSState, cfg: LBFGSSettings, step: Tensor, current_evals: Tensor, capped: Tensor
) -> Tensor:
    """(B,) torch.optim.LBFGS's break conditions after an evaluation at the moved geometry (a capped
    move also ends the outer step)."""
    return (
        (current_evals >= cfg.max_eval)
        | (_max_abs(st.g) <= cfg.tolerance_grad)
        | (_max_abs(step) <= cfg.tolerance_change)
        | ((st.loss - st.prev_loss).abs() < cfg.tolerance_change)
        | capped
    )


# ---------------------------------------------------------------------- the driver
@dataclass
class StepResult:
    """What one outer step did to each slot it ran (k slots; arrays on the CPU).

    ``positions``, ``energies`` and ``forces`` all belong to the returned geometry after the step
    (after the displacement cap and the close-atom repair; where a repair made it differ from the
    optimiser's own geometry, E/F come from one extra evaluation of those slots).
    ``start_energies``/``start_forces`` belong to the optimiser's geometry at the start of the step;
    on a slot's first step (``started``) that is the geometry given to :meth:`BatchedLBFGS.add`.
    ``status``: "running", "converged" (max |F| <= tolerance_grad: L-BFGS stops by itself) or
    "skipped_nonfinite" (the arrays hold whatever was reached, possibly NaN).
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
    status: list[str]  # (k,) RUNNING, CONVERGED or NONFINITE
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


class BatchedLBFGS:
    """``torch.optim.LBFGS`` for a batch of conformations, one history per slot.

    Args:
        energy_forces: evaluates a padded batch, see :data:`EnergyForces`. It is called with only
            the slots that need an evaluation, trimmed to their largest atom count.
        batch_size: number of slots B.
        lr, max_iter, max_eval, history_size, tolerance_grad, tolerance_change: see
            :class:`LBFGSSettings` (or pass ``settings``).
        max_displacement: Angstrom, the :class:`DisplacementCap`; None = off (the paper).
        min_distance, repair_distance, repair_mode: the :class:`CloseAtomRepair` (GOLF's
            environment); ``min_distance=0`` turns it off.
        dtype, device: of positions, gradients and history. float64 by default whatever the
            model's dtype: see the module docstring (batch independence).
    """

    def __init__(
        self,
        energy_forces: EnergyForces,
        *,
        batch_size: int = 64,
        settings: LBFGSSettings | None = None,
        max_displacement: float | None = None,
        min_distance: float = 0.7,
        repair_distance: float = 0.75,
        repair_mode: str = "golf",
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        **lbfgs,
    ):
        if batch_size < 1:
            raise OptimizeError(f"batch_size must be >= 1, got {batch_size}")
        if dtype not in (torch.float32, torch.float64):
            raise OptimizeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if settings is not None and lbfgs:
            raise OptimizeError(f"give either settings or L-BFGS arguments, not both ({', '.join(lbfgs)})")
        known = {f.name for f in fields(LBFGSSettings)}
        unknown = sorted(set(lbfgs) - known)
        if unknown:
            raise OptimizeError(f"unknown optimiser argument(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
        if min_distance < 0:
            raise OptimizeError(f"min_distance must be >= 0, got {min_distance}")
        self.energy_forces = energy_forces
        self.settings = settings or LBFGSSettings(**lbfgs)
        self.cap = None if max_displacement is None else DisplacementCap(float(max_displacement))
        self.repair = CloseAtomRepair(min_distance, repair_distance, repair_mode) if min_distance > 0 else None
        self.dtype = dtype
        self.device = torch.device(device)
        self.state = LBFGSState.empty(batch_size, self.settings.history_size, dtype, self.device)

    @property
    def batch_size(self) -> int:
        return self.state.batch_size

    @property
    def occupied(self) -> Tensor:
        """(B,) bool: slots holding a conformation."""
        return self.state.occupied.clone()

    @property
    def n_free(self) -> int:
        return int((~self.state.occupied).sum())

    @property
    def n_occupied(self) -> int:
        return self.batch_size - self.n_free

    def key(self, slot: int) -> Any:
        return self.state.keys[slot]

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
        st = self.state
        free = (~st.occupied).nonzero()
        if free.numel() == 0:
            raise OptimizeError(f"no free slot for {key!r}: all {self.batch_size} slots are occupied")
        b = int(free[0])
        st.grow_atoms(n)
        st.reset(b, self.settings.lr)
        st.keys[b] = key
        st.occupied[b] = True
        st.n_atoms[b] = n
        st.species[b, :n] = species.to(self.device)
        st.x[b, :n] = coordinates.to(self.device, self.dtype)
        return b

    def remove(self, slot: int) -> None:
        """Free a slot (its state is reset when the slot is next filled)."""
        st = self.state
        if not 0 <= slot < self.batch_size or not bool(st.occupied[slot]):
            raise OptimizeError(f"slot {slot} is not occupied")
        st.occupied[slot] = False
        st.keys[slot] = None

    # ------------------------------------------------------------------ model calls
    def _evaluate(self, mask: Tensor, evals: Tensor) -> None:
        """Energies and gradients at x for the slots in mask, in one call of energy_forces.

        Slots with non-finite positions are not evaluated; they and slots whose energy or forces
        come back non-finite are stopped, so they never enter the batch again.
        """
        st = self.state
        idx = mask.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        finite = torch.isfinite(st.x[idx]).flatten(1).all(1)
        if not bool(finite.all()):
            bad = idx[~finite]
            st.stopped[bad] = True
            st.loss[bad] = float("nan")
            st.g[bad] = float("nan")
            idx = idx[finite]
            if idx.numel() == 0:
                return
        n = int(st.n_atoms[idx].max())
        energies, forces, ok = self._call(idx, st.x[idx, :n])
        st.loss[idx] = energies
        st.g[idx, :n] = -forces  # the gradient is minus the forces
        st.has_eval[idx] = True
        st.func_evals[idx] += 1
        evals[idx] += 1
        st.stopped[idx[~ok]] = True

    def _call(self, idx: Tensor, coordinates: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """energy_forces on slots idx at coordinates (k, n, 3): energies (k,) float64, forces, ok (k,)."""
        n = coordinates.shape[1]
        species = self.state.species[idx, :n]  # (k, n)
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

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self) -> StepResult:
        """One outer step: ``torch.optim.LBFGS.step(closure)`` for every occupied, finite slot.

        Up to ``max_iter`` position updates per slot, one batched evaluation per inner iteration
        for the slots still iterating, then the close-atom repair and, where the returned
        geometry has no evaluation yet, one more batched evaluation (which the next step reuses as
        torch's initial closure call, so the total cost per step is that of torch's LBFGS).
        """
        st, cfg = self.state, self.settings
        run = st.occupied & ~st.stopped
        evals = torch.zeros(self.batch_size, dtype=torch.int64, device=self.device)
        iters = torch.zeros_like(evals)
        capped = torch.zeros_like(run)
        started = run & (st.func_evals == 0)

        # torch: orig_loss = closure(); if max|g| <= tolerance_grad: return
        self._evaluate(run & ~st.has_eval, evals)
        start_energies = st.loss.clone()
        start_forces = -st.g
        iterating = run & ~st.stopped & (_max_abs(st.g) > cfg.tolerance_grad)
        current_evals = torch.ones_like(evals)
        x_start = st.x.clone() if self.cap is not None else None
        for n_iter in range(1, cfg.max_iter + 1):
            if not bool(iterating.any()):
                break
            iters += iterating
            moving, step, cap_now = lbfgs_iteration(st, cfg, iterating, self.cap, x_start)
            capped |= cap_now
            if n_iter == cfg.max_iter:
                # torch does not evaluate after the last inner move; the end of step() does
                st.has_eval &= ~moving
                break
            self._evaluate(moving, evals)
            current_evals += moving
            moving &= ~st.stopped
            iterating = moving & ~inner_iteration_done(st, cfg, step, current_evals, cap_now)

        live = run & ~st.stopped
        repaired = self._repair(live)
        self._evaluate(live & ~st.has_eval, evals)  # the next step's initial closure call
        energies, forces = st.loss.clone(), -st.g
        shifted = live & ~st.stopped & (st.offset != 0).flatten(1).any(1)
        if bool(shifted.any()):  # E/F of the returned (repaired) geometry: one extra call, those slots only
            idx = shifted.nonzero().squeeze(1)
            n = int(st.n_atoms[idx].max())
            e, f, ok = self._call(idx, (st.x + st.offset)[idx, :n])
            energies[idx] = e
            forces = forces.clone()
            forces[idx, :n] = f
            evals[idx] += 1
            st.stopped[idx[~ok]] = True
        return self._result(
            run, started, start_energies, start_forces, energies, forces, repaired, capped, iters, evals
        )

    def _repair(self, live: Tensor) -> Tensor:
        """Apply the close-atom repair policy to the slots in live; (B,) which were repaired."""
        st = self.state
        if self.repair is None:
            return torch.zeros_like(live)
        if self.repair.mode == "continue":  # the optimiser continues from the repaired geometry
            repaired, delta = self.repair.displacement(st.x, st.pair_mask(), live)
            if delta is not None:
                st.x = st.x + delta
                st.has_eval &= ~repaired
        else:  # GOLF: repair a copy (positions + accumulated repairs); the optimiser keeps its own path
            repaired, delta = self.repair.displacement(st.x + st.offset, st.pair_mask(), live)
            if delta is not None:
                st.offset = st.offset + delta
        return repaired

    def _result(
        self, run, started, start_energies, start_forces, energies, forces, repaired, capped, iters, evals
    ) -> StepResult:
        st = self.state
        idx = run.nonzero().squeeze(1)
        converged = _max_abs(forces) <= self.settings.tolerance_grad
        code = torch.where(st.stopped, 2, torch.where(converged, 1, 0))[idx].tolist()
        names = (RUNNING, CONVERGED, NONFINITE)
        n = int(st.n_atoms[idx].max()) if idx.numel() else 0
        cpu = dict(device="cpu")
        return StepResult(
            slots=idx.to(**cpu),
            keys=[st.keys[int(b)] for b in idx.tolist()],
            n_atoms=st.n_atoms[idx].to(**cpu),
            species=st.species[idx, :n].to(**cpu),
            positions=(st.x + st.offset)[idx, :n].to(**cpu),
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


# ---------------------------------------------------------------------- the streaming loop
def run_stream(
    opt: BatchedLBFGS,
    starts: Iterable[tuple[Any, Any, Any]],
    on_step: Callable[[StepResult], Sequence[bool]],
    stop: Callable[[], bool] | None = None,
) -> list[Any]:
    """Stream conformations through ``opt``: fill free slots, step, retire ended trajectories.

    Args:
        starts: (key, species, coordinates) per conformation, pulled lazily when a slot is free
            (a generator may be endless, or do work per start).
        on_step: called with every :class:`StepResult`; returns one bool per reported slot: True
            ends that trajectory (its slot is freed and refilled before the next step).
        stop: checked before every step; True ends the stream at once.

    Returns:
        The keys of trajectories still running when ``stop`` ended the stream (empty otherwise).
    """
    starts = iter(starts)
    exhausted = False
    while stop is None or not stop():
        while opt.n_free and not exhausted:
            item = next(starts, None)
            if item is None:
                exhausted = True
                break
            key, species, coordinates = item
            opt.add(species, coordinates, key)
        if not opt.n_occupied:
            return []
        res = opt.step()
        ended = np.asarray(on_step(res), dtype=bool).reshape(len(res))
        for slot in res.slots[torch.from_numpy(ended)].tolist():
            opt.remove(slot)
    return [opt.key(b) for b in opt.occupied.nonzero().squeeze(1).tolist()]


@dataclass
class Trajectory:
    """One conformation's optimisation. Row 0 is the start geometry, row k the one after step k."""

    key: Any
    species: np.ndarray  # (n,) atomic numbers
    positions: np.ndarray  # (T + 1, n, 3) Angstrom
    energies: np.ndarray  # (T + 1,) Hartree
    forces: np.ndarray  # (T + 1, n, 3) Hartree/Angstrom
    repaired: np.ndarray  # (T + 1,) bool, False at row 0
    status: str  # CONVERGED, STEP_LIMIT, BROKEN, FRAGMENTED or NONFINITE
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

    def add(self, res: StepResult, k: int, start: np.ndarray) -> None:
        if bool(res.started[k]):  # row 0: the start geometry and its evaluation
            self.positions.append(start)
            self.energies.append(float(res.start_energies[k]))
            self.forces.append(res.start_forces[k, : int(res.n_atoms[k])].numpy().astype(np.float64))
            self.repaired.append(False)
        self.positions.append(res.positions_of(k).astype(np.float64))
        self.energies.append(float(res.energies[k]))
        self.forces.append(res.forces_of(k).astype(np.float64))
        self.repaired.append(bool(res.repaired[k]))
        self.evaluations += int(res.evaluations[k])

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


def _connectivity(species: np.ndarray, positions: np.ndarray):
    """RDKit molecule with the bonds that RDKit's DetermineConnectivity perceives (covalent radii x 1.3)."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = Chem.RWMol()
    for z in species:
        mol.AddAtom(Chem.Atom(int(z)))
    set_positions(mol, positions)
    rdDetermineBonds.DetermineConnectivity(mol)
    return mol


def bond_change(species, start, final) -> str | None:
    """FRAGMENTED if ``final`` falls into more pieces than ``start``, BROKEN if its bond graph differs
    otherwise (a bond broke or formed), None if the bonds are those of ``start``.

    Both graphs come from RDKit's DetermineConnectivity (covalent radii x 1.3), so an input
    geometry is compared with itself by the same rule. Forces of an NNP vanish once atoms are far
    apart, so a blown-apart geometry can look converged: this is the check that says it is not.
    """
    from rdkit import Chem

    species = np.asarray(species, dtype=np.int64).reshape(-1)
    a = _connectivity(species, np.asarray(start, dtype=np.float64).reshape(-1, 3))
    b = _connectivity(species, np.asarray(final, dtype=np.float64).reshape(-1, 3))
    if len(Chem.GetMolFrags(b)) > len(Chem.GetMolFrags(a)):
        return FRAGMENTED
    if not np.array_equal(Chem.GetAdjacencyMatrix(a), Chem.GetAdjacencyMatrix(b)):
        return BROKEN
    return None


def _final_status(tr: _Growing, step_status: str, fmax: float, check_bonds: bool) -> str:
    final = tr.positions[-1]
    if step_status == NONFINITE or not np.isfinite(final).all() or not np.isfinite(tr.forces[-1]).all():
        return NONFINITE
    if check_bonds:
        change = bond_change(tr.species, tr.positions[0], final)
        if change is not None:
            return change
    return CONVERGED if float(np.abs(tr.forces[-1]).max()) <= fmax else STEP_LIMIT


def optimize(
    energy_forces: EnergyForces,
    species_list: Sequence,
    coords_list: Sequence,
    steps: int,
    batch_size: int = 64,
    *,
    keys: Sequence | None = None,
    fmax: float | None = None,
    exact_steps: bool = False,
    check_bonds: bool = True,
    should_stop: Callable[[StepResult], Any] | None = None,
    callback: Callable[[StepResult], None] | None = None,
    progress: bool = False,
    **optimizer_kwargs,
) -> list[Trajectory]:
    """Optimise many conformations, streaming them through a :class:`BatchedLBFGS` batch.

    Each conformation gets up to ``steps`` outer steps. Without ``exact_steps`` its trajectory
    ends early when it converges (max |F| <= ``fmax``, or L-BFGS stops by itself), turns
    non-finite, or ``should_stop(result)`` returns True for it (an array-like of k bools, one per
    slot of the result). With ``exact_steps`` every finite trajectory runs exactly ``steps``
    steps, as the paper's evaluation does (a converged L-BFGS then stays where it is).

    The final status says what the last geometry is: CONVERGED (max |F| <= fmax and, with
    ``check_bonds``, the input's bond graph), BROKEN or FRAGMENTED (:func:`bond_change`),
    STEP_LIMIT (stopped without converging) or NONFINITE.

    Args:
        species_list: per conformation, (n_i,) atomic numbers.
        coords_list: per conformation, (n_i, 3) Angstrom.
        keys: optional per-conformation keys (default: the index); reported in the trajectories.
        fmax: Hartree/Angstrom convergence threshold (default: the optimiser's tolerance_grad).
        callback: called with every :class:`StepResult` (logging, progress).
        optimizer_kwargs: passed to :class:`BatchedLBFGS` (lr, max_iter, max_displacement, dtype,
            device, ...; :func:`optimizer_settings` reads them from a checkpoint).

    Returns:
        One :class:`Trajectory` per input conformation, in input order.
    """
    if len(species_list) != len(coords_list):
        raise OptimizeError(f"{len(species_list)} species arrays but {len(coords_list)} coordinate arrays")
    if steps < 1:
        raise OptimizeError(f"steps must be >= 1, got {steps}")
    if fmax is not None and not fmax > 0:
        raise OptimizeError(f"fmax must be > 0 Hartree/Angstrom, got {fmax}")
    keys = list(range(len(species_list))) if keys is None else list(keys)
    if len(keys) != len(species_list):
        raise OptimizeError(f"{len(keys)} keys for {len(species_list)} conformations")
    opt = BatchedLBFGS(energy_forces, batch_size=max(1, min(batch_size, len(species_list))), **optimizer_kwargs)
    threshold = opt.settings.tolerance_grad if fmax is None else float(fmax)
    growing = {i: _Growing(keys[i], np.asarray(species_list[i], dtype=np.int64).reshape(-1)) for i in range(len(keys))}
    starts = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in coords_list]
    done: dict[int, Trajectory] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(species_list), desc="optimize", unit="conf")

    def on_step(res: StepResult) -> np.ndarray:
        policy = np.zeros(len(res), dtype=bool)
        if should_stop is not None or callback is not None:
            theirs = replace(res, keys=[keys[i] for i in res.keys])  # the caller sees its own keys
            if should_stop is not None and len(res):
                policy = np.asarray(should_stop(theirs), dtype=bool).reshape(len(res))
            if callback is not None:
                callback(theirs)
        ended = np.zeros(len(res), dtype=bool)
        for k, i in enumerate(res.keys):
            tr = growing[i]
            tr.add(res, k, starts[i])
            status = res.status[k]
            converged = status == CONVERGED or float(res.forces[k].abs().max()) <= threshold
            ended[k] = (
                status == NONFINITE or len(tr.energies) - 1 >= steps or (converged and not exact_steps) or policy[k]
            )
            if ended[k]:
                done[i] = growing.pop(i).finish(_final_status(tr, status, threshold, check_bonds))
                if bar is not None:
                    bar.update(1)
        return ended

    # slots carry the input index as key; the caller's keys go into the trajectories
    run_stream(opt, ((i, species_list[i], starts[i]) for i in range(len(keys))), on_step)
    if bar is not None:
        bar.close()
    return [done[i] for i in range(len(species_list))]


# ---------------------------------------------------------------------- checkpoint meta
_META_KEYS = ("lr", "max_iter", "max_eval", "history_size", "tolerance_grad", "tolerance_change", "max_displacement")


def optimizer_meta(max_displacement: float | None = None, **lbfgs) -> dict:
    """JSON-able description of how a model is optimised, for ``meta["optimizer"]`` of a checkpoint.

    The evaluation, ``golf optimize`` and the ASE calculator read it back with
    :func:`optimizer_settings`, so a model is used the way it was evaluated unless told otherwise.
    """
    settings = LBFGSSettings(**lbfgs)
    if max_displacement is not None:
        DisplacementCap(float(max_displacement))  # checks it
    return {
        "algorithm": "torch.optim.LBFGS",
        **{f.name: getattr(settings, f.name) for f in fields(settings)},
        "max_displacement": None if max_displacement is None else float(max_displacement),
    }


def optimizer_settings(meta: Mapping[str, Any]) -> dict:
    """Keyword arguments of :func:`optimize` / :class:`BatchedLBFGS` from a checkpoint's ``meta``.

    A checkpoint without ``meta["optimizer"]`` (older ones, imported ones) gets {}: the paper's
    L-BFGS without a cap. Unknown keys are an error, not silently ignored.
    """
    spec = dict(meta.get("optimizer") or {})
    algorithm = spec.pop("algorithm", "torch.optim.LBFGS")
    if algorithm != "torch.optim.LBFGS":
        raise OptimizeError(f"checkpoint optimizer {algorithm!r}: only 'torch.optim.LBFGS' is implemented")
    unknown = sorted(set(spec) - set(_META_KEYS))
    if unknown:
        raise OptimizeError(
            f"checkpoint optimizer has unknown key(s) {', '.join(unknown)}; known: {', '.join(_META_KEYS)}"
        )
    out = {k: v for k, v in spec.items() if v is not None}
    LBFGSSettings(**{k: v for k, v in out.items() if k != "max_displacement"})  # checks them
    return out


def optimize_with_model(
    model,
    species_list: Sequence,
    coords_list: Sequence,
    steps: int = 100,
    *,
    fmax: float | None = None,
    exact_steps: bool = False,
    batch_size: int = 64,
    progress: bool = False,
    **overrides,
) -> list[Trajectory]:
    """:func:`optimize` with a :class:`golf.nnp.model.NNP` the way the model was evaluated: the settings
    recorded in its checkpoint (:func:`optimizer_settings`), updated by ``overrides`` (a value of
    None removes a setting, e.g. ``max_displacement=None`` for the paper's L-BFGS). For
    ``golf optimize`` and :class:`golf.optim.calculator.NNPCalculator`."""
    settings = {**optimizer_settings(getattr(model, "meta", {}) or {}), **overrides}
    settings = {k: v for k, v in settings.items() if v is not None}
    return optimize(
        model.energies_forces,
        species_list,
        coords_list,
        steps=steps,
        batch_size=batch_size,
        fmax=fmax,
        exact_steps=exact_steps,
        progress=progress,
        device=model.device,
        **settings,
    )
