"""Training an NNP on energies and forces: loss, Adam + cosine schedule, mixed D0/new batches.

Settings follow reference/golf-paper.md §1.4-§1.5: batch 64, Adam lr 1e-4 with a cosine decay to
lr/1e3, gradient-norm clip 1.0, rho = 0.01, steps with a non-finite loss skipped.

Loss (⚠ the paper's Eq. 2 and the authors' code differ, golf-paper.md §1.5). We follow the code,
which produced the published numbers:

    L = rho * mean_B (E - E_ref)^2 + (1 - rho) * mean_B [ (1 / 3n) sum_atoms,xyz (F - F_ref)^2 ]

with total energies in Hartree (so the energy term is in Ha^2) and forces in Hartree/Angstrom.
Eq. 2 instead weights the force term by 1 and sums over xyz ((1/n) sum_i |dF_i|^2): three times
our per-component mean, and 1/0.99 of our weight.

Fine-tuning (GOLF rounds, trajectory baselines) passes ``new``: each batch then takes
``batch - int(batch * (1 - initial_conf_pct))`` samples from D0 (7 of 64 for 0.1, as the code's
replay buffers do, §1.4) and the rest from ``new``, uniformly without replacement within a batch.

Resuming (``train(..., checkpoint=PATH)``): every ``checkpoint_every`` steps the whole state of
the run (model, Adam, schedule position, the sampler's and torch's RNG states, partial metric sums,
metrics rows, the best model so far) is written atomically to PATH; a call that finds a checkpoint
of the same starting model, settings and data continues from it and returns what an uninterrupted
run returns, bit for bit on CPU. A SLURM job killed at its wall time thus loses at most
``checkpoint_every`` steps on its retry.

Shapes: B conformations per batch, N padded atoms, P conformations in a data pool.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from golf.data.dataset import Dataset, require_total_energies
from golf.nnp.model import NNP, dataset_digest, padded_batch, resolve_device
from golf.train.validation import validation_key, validation_keys
from golf.units import HARTREE_TO_KCALPERMOL

__all__ = [
    "TrainSettings",
    "TrainResult",
    "TrainError",
    "train",
    "batch_composition",
]

log = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "step",
    "lr",
    "train_loss",
    "train_energy_mae_kcalmol",
    "train_force_mae_kcalmol_per_A",
    "val_loss",
    "val_energy_mae_kcalmol",
    "val_force_mae_kcalmol_per_A",
    "skipped_steps",
    "elapsed_s",
]


class TrainError(Exception):
    """Bad training settings or data."""


@dataclass
class TrainSettings:
    """Training settings; defaults are the paper's (reference/golf-paper.md §1.4-§1.5).

    Attributes:
        steps: gradient steps (the paper: 5e5; the default study: a few thousand).
        batch_size: conformations per batch (64).
        lr: Adam learning rate at the start (1e-4).
        lr_min_factor: cosine schedule ends at lr * lr_min_factor (1e-3, i.e. 1e-7).
        rho: energy weight; forces get 1 - rho (the authors' code, see the module docstring).
        grad_clip: maximum gradient norm (1.0).
        initial_conf_pct: share of each batch drawn from D0 when ``new`` is given (0.1).
        val_fraction, val_split: the validation split of a D0 without one (drawn as
            :func:`golf.train.validation.mark_validation` does, with ``seed``): the fraction of D0's
            molecules (or conformations) held out, by "molecule" (the paper's split) or
            "conformer". A D0 that carries its split (the workflow's ``results/seed-<s>/d0.h5``, one per
            study seed) keeps it, whatever these say.
        eval_every: steps between evaluations (a metrics row, best-model check).
        seed: seeds the validation split, the batch sampling and nothing else (the model's
            initial weights come from ``build_model(seed=...)``).
        device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
        schedule_start, schedule_total: this call runs steps [schedule_start, schedule_start +
            steps) of one cosine schedule over schedule_total steps (None: over ``steps``), so that
            jobs that fine-tune in turn (GOLF rounds) share the paper's single schedule.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    lr_min_factor: float = 1e-3
    rho: float = 0.01
    grad_clip: float = 1.0
    initial_conf_pct: float = 0.1
    val_fraction: float = 0.1
    val_split: str = "molecule"
    eval_every: int = 100
    seed: int = 0
    device: str = "auto"
    schedule_start: int = 0
    schedule_total: int | None = None

    def __post_init__(self):
        checks = [
            ("steps", self.steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("lr_min_factor", 0 <= self.lr_min_factor <= 1, "in [0, 1]"),
            ("rho", 0 <= self.rho <= 1, "in [0, 1]"),
            ("grad_clip", self.grad_clip > 0, "> 0"),
            ("initial_conf_pct", 0 <= self.initial_conf_pct <= 1, "in [0, 1]"),
            ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
            ("eval_every", self.eval_every >= 1, ">= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise TrainError(f"TrainSettings.{name} = {getattr(self, name)!r}; must be {allowed}")


@dataclass
class TrainResult:
    """The best model by validation loss (the last one without validation data) and its history."""

    model: NNP
    history: pd.DataFrame  # one row per evaluation, columns HISTORY_COLUMNS
    best_step: int
    skipped_steps: int


def batch_composition(
    rng: np.random.Generator, n_d0: int, n_new: int, batch_size: int, initial_conf_pct: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the D0 pool and the new pool for one batch.

    Without new data (n_new = 0) the batch is ``min(batch_size, n_d0)`` distinct D0 samples. With
    new data the D0 share is ``batch_size - int(batch_size * (1 - initial_conf_pct))`` (7 of 64 for
    0.1, as in the authors' replay buffers) and the rest comes from the new pool. Sampling is
    uniform without replacement within each pool. A pool smaller than its share gives all its
    samples and the other pool fills the gap; if both together are smaller than the batch, the
    batch holds everything once.
    """
    if n_new == 0:
        return rng.choice(n_d0, size=min(batch_size, n_d0), replace=False), np.empty(0, dtype=np.int64)
    want_new = int(batch_size * (1.0 - initial_conf_pct))
    want_d0 = batch_size - want_new
    k_d0, k_new = min(want_d0, n_d0), min(want_new, n_new)
    # fill a short pool's gap from the other pool
    k_new = min(n_new, k_new + (want_d0 - k_d0))
    k_d0 = min(n_d0, k_d0 + (want_new - min(want_new, n_new)))
    return rng.choice(n_d0, size=k_d0, replace=False), rng.choice(n_new, size=k_new, replace=False)


class _Pool:
    """A data pool padded once and kept on the device; batches are gathered from it by index."""

    def __init__(self, model: NNP, conformers: list, n_max: int, device: torch.device, dtype: torch.dtype):
        self.size = len(conformers)
        batch = padded_batch(conformers)
        pad = n_max - batch.species.shape[1]
        species = torch.nn.functional.pad(batch.species, (0, pad), value=-1)
        self.elem_idxs = model.element_indices(species).to(device)  # (P, N); checks elements once
        sae = model.self_energy_sums(self.elem_idxs.cpu())  # (P,) float64
        # The target is the energy without self energies: small numbers, exact in float32.
        self.energies = (batch.energies - sae).to(device=device, dtype=dtype)  # (P,) Hartree
        self.coordinates = torch.nn.functional.pad(batch.coordinates, (0, 0, 0, pad)).to(device, dtype)
        self.forces = torch.nn.functional.pad(batch.forces, (0, 0, 0, pad)).to(device, dtype)  # (P, N, 3)
        self.n_atoms = batch.n_atoms.to(device)  # (P,)
        self._n_atoms_cpu = batch.n_atoms

    def max_atoms(self, idx: np.ndarray) -> int:
        return int(self._n_atoms_cpu[idx].max()) if len(idx) else 0

    def gather(self, idx: Tensor, n: int) -> tuple[Tensor, ...]:
        """Rows ``idx`` trimmed to ``n`` atom columns: (elem_idxs, coords, energies, forces, n_atoms)."""
        return (
            self.elem_idxs[idx, :n],
            self.coordinates[idx, :n],
            self.energies[idx],
            self.forces[idx, :n],
            self.n_atoms[idx],
        )


def _usable(dataset: Dataset | None, what: str) -> list:
    """Labelled conformations with finite energies and forces; the rest are counted and logged."""
    if dataset is None:
        return []
    ok = [c for c in dataset.conformers if c.status == "ok"]
    good = [c for c in ok if c.trainable]
    if len(good) < len(ok):
        log.warning("%s: %d labelled conformation(s) without finite energy/forces left out", what, len(ok) - len(good))
    log.info("%s: %d of %d conformations used (status 'ok')", what, len(good), len(dataset.conformers))
    return good


def _batch_terms(
    model: NNP, batch: tuple[Tensor, ...], create_graph: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-conformation errors of one batch.

    Returns (B,) energy squared error (Ha^2), (B,) force mean squared error per component
    ((Ha/A)^2), (B,) energy absolute error (Ha), (B,) force absolute-error sums (Ha/A) and (B,)
    numbers of force components. With an ensemble (K > 1) the squared errors are averaged over
    the members, so each member is fitted to the data on its own (as ANI ensembles are), while the
    absolute errors are those of the ensemble mean, the model's prediction. That costs K force
    passes per batch.
    """
    elem_idxs, coords, e_ref, f_ref, n_atoms = batch
    coords = coords.detach().requires_grad_(True)
    mask = (elem_idxs >= 0).unsqueeze(-1)  # (B, N, 1)
    n_comp = 3 * n_atoms.to(coords.dtype)  # (B,)
    k = model.ensemble_size
    energies = model.network_energies(elem_idxs, coords, ensemble_values=k > 1)  # (B,) or (K, B), no self energies
    if k == 1:
        (grad,) = torch.autograd.grad(energies.sum(), coords, create_graph=create_graph)
        df = torch.where(mask, -grad - f_ref, torch.zeros_like(grad))  # (B, N, 3)
        de = energies - e_ref  # (B,)
        return de**2, (df**2).sum(dim=(1, 2)) / n_comp, de.abs(), df.abs().sum(dim=(1, 2)), n_comp
    grads = [
        torch.autograd.grad(
            energies[i].sum(), coords, create_graph=create_graph, retain_graph=i < k - 1 or create_graph
        )[0]
        for i in range(k)
    ]
    df = torch.where(mask, -torch.stack(grads) - f_ref, torch.zeros_like(grads[0]))  # (K, B, N, 3)
    de = energies - e_ref  # (K, B)
    e_sq = (de**2).mean(dim=0)
    f_msq = (df**2).sum(dim=(2, 3)).mean(dim=0) / n_comp
    return e_sq, f_msq, de.mean(dim=0).abs(), df.mean(dim=0).abs().sum(dim=(1, 2)), n_comp


def _loss(rho: float, e_sq: Tensor, f_msq: Tensor) -> Tensor:
    return rho * e_sq.mean() + (1.0 - rho) * f_msq.mean()


def _evaluate(model: NNP, pool: _Pool, rho: float, chunk: int) -> tuple[float, float, float]:
    """(loss, energy MAE kcal/mol, force MAE kcal/mol/A) over a whole pool."""
    e_sq = f_msq = e_abs = f_abs = n_comp = 0.0
    for start in range(0, pool.size, chunk):
        idx = np.arange(start, min(start + chunk, pool.size))
        batch = pool.gather(torch.as_tensor(idx, device=pool.n_atoms.device), pool.max_atoms(idx))
        with torch.enable_grad():
            t = [x.detach() for x in _batch_terms(model, batch, create_graph=False)]
        e_sq += float(t[0].sum())
        f_msq += float(t[1].sum())
        e_abs += float(t[2].sum())
        f_abs += float(t[3].sum())
        n_comp += float(t[4].sum())
    loss = rho * e_sq / pool.size + (1 - rho) * f_msq / pool.size
    return loss, e_abs / pool.size * HARTREE_TO_KCALPERMOL, f_abs / n_comp * HARTREE_TO_KCALPERMOL


# === the pieces of a training run ==========================================================


@dataclass
class _Pools:
    """Training pools (D0, new data), the validation pool and the held-out molecules."""

    d0: _Pool
    new: _Pool | None
    val: _Pool | None
    val_ids: set  # validation_key values
    val_split: str  # what a key is: "molecule" or "conformer"


def _make_pools(model: NNP, d0: Dataset, new: Dataset | None, settings: TrainSettings, device) -> _Pools:
    """Labelled conformations into device pools, the validation keys held out: D0's marks, or drawn here."""
    d0_rows, new_rows = _usable(d0, "D0"), _usable(new, "new data")
    if "validation" in d0.attrs:  # the split D0 carries (mark_validation)
        by = d0.attrs["validation"]["by"]
        val_ids = {validation_key(c, by) for c in d0_rows if c.props.get("validation") == 1}
    else:  # a D0 without one (library use): drawn here the same way
        by = settings.val_split
        val_ids = validation_keys(d0_rows, settings.val_fraction, settings.seed, by)
    val_rows = [c for c in d0_rows + new_rows if validation_key(c, by) in val_ids]
    d0_rows = [c for c in d0_rows if validation_key(c, by) not in val_ids]
    new_rows = [c for c in new_rows if validation_key(c, by) not in val_ids]
    if not d0_rows and not new_rows:
        raise TrainError("no labelled (status 'ok') training conformations with finite energies and forces")
    if not d0_rows:  # a pure-new fine-tune: treat the new data as the only pool
        d0_rows, new_rows = new_rows, []
    n_max = max(len(c.species) for c in d0_rows + new_rows + val_rows)
    dtype = model.dtype
    pools = _Pools(
        d0=_Pool(model, d0_rows, n_max, device, dtype),
        new=_Pool(model, new_rows, n_max, device, dtype) if new_rows else None,
        val=_Pool(model, val_rows, n_max, device, dtype) if val_rows else None,
        val_ids=val_ids,
        val_split=by,
    )
    log.info(
        "training on %d D0 + %d new conformations, validating on %d (%d %ss); %d steps on %s",
        pools.d0.size,
        pools.new.size if pools.new else 0,
        pools.val.size if pools.val else 0,
        len(val_ids),
        by,
        settings.steps,
        device,
    )
    return pools


def _optimizer(model: NNP, settings: TrainSettings):
    """Fresh Adam and a cosine decay to lr * lr_min_factor (golf-paper.md §1.5): (params, optimizer, scheduler).

    One cosine over ``schedule_total`` steps, of which this call runs steps [schedule_start,
    schedule_start + steps): GOLF rounds are separate jobs that share one schedule over the whole
    budget K x U, as the paper's single training run does.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    total = settings.schedule_total or settings.steps
    floor = settings.lr_min_factor

    def cosine(step: int) -> float:
        progress = min(settings.schedule_start + step, total) / total
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return params, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)


def _next_batch(rng: np.random.Generator, pools: _Pools, settings: TrainSettings) -> tuple[Tensor, ...]:
    """One training batch (elem_idxs, coords, energies, forces, n_atoms), D0 and new data mixed."""
    idx_d0, idx_new = batch_composition(
        rng, pools.d0.size, pools.new.size if pools.new else 0, settings.batch_size, settings.initial_conf_pct
    )
    parts = [(pools.d0, idx_d0)] + ([(pools.new, idx_new)] if pools.new is not None and len(idx_new) else [])
    n = max(pool.max_atoms(idx) for pool, idx in parts)
    device = pools.d0.n_atoms.device
    gathered = [pool.gather(torch.as_tensor(idx, device=device), n) for pool, idx in parts]
    return tuple(torch.cat(columns) for columns in zip(*gathered, strict=True))


ACCUMULATORS = ("loss", "e_abs", "f_abs", "n_comp", "n")  # the training-error sums of a metrics row


@dataclass
class _Run:
    """All mutable state of one training run, created in one place (:meth:`fresh`), saved whole
    in a checkpoint (:func:`_save_checkpoint`) and restored whole (:func:`_restore`)."""

    model: NNP
    params: list[Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator  # the batch sampler's
    step: int = 0  # the last finished step
    skipped: int = 0
    acc: dict[str, Tensor] = field(default_factory=dict)  # training-error sums since the last row (no sync per step)
    acc_steps: int = 0
    history: list[dict] = field(default_factory=list)
    best_loss: float = math.inf
    best_step: int = 0
    best_state: dict[str, Tensor] | None = None
    elapsed_before: float = 0.0  # seconds spent before this process (a resumed run)

    @classmethod
    def fresh(cls, start_model: NNP, settings: TrainSettings, device) -> _Run:
        model = copy.deepcopy(start_model).to(device)
        params, optimizer, scheduler = _optimizer(model, settings)
        zero = torch.zeros((), dtype=torch.float64, device=device)
        acc = {k: zero.clone() for k in ACCUMULATORS}
        return cls(model, params, optimizer, scheduler, np.random.default_rng([settings.seed, 0xBA7C4]), acc=acc)


def _train_step(run: _Run, batch: tuple[Tensor, ...], settings: TrainSettings) -> None:
    """One gradient step; a non-finite loss or gradient skips the update (counted in ``run.skipped``)."""
    terms = _batch_terms(run.model, batch, create_graph=True)
    loss = _loss(settings.rho, terms[0], terms[1])
    run.optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        run.skipped += 1
        return
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, settings.grad_clip)
    if not torch.isfinite(grad_norm):
        run.skipped += 1
        return
    run.optimizer.step()
    with torch.no_grad():
        run.acc["loss"] += loss.detach().double()
        run.acc["e_abs"] += terms[2].detach().sum().double()
        run.acc["f_abs"] += terms[3].detach().sum().double()
        run.acc["n_comp"] += terms[4].sum().double()
        run.acc["n"] += terms[2].shape[0]
    run.acc_steps += 1


def _validate(run: _Run, pools: _Pools, settings: TrainSettings, elapsed: float) -> dict:
    """A metrics row at ``run.step``: training errors since the last row, validation errors; best-model check."""
    model = run.model
    row = dict.fromkeys(HISTORY_COLUMNS, float("nan"))
    row.update(step=run.step, lr=run.optimizer.param_groups[0]["lr"], skipped_steps=run.skipped)
    if run.acc_steps:
        acc = run.acc
        row["train_loss"] = float(acc["loss"]) / run.acc_steps
        row["train_energy_mae_kcalmol"] = float(acc["e_abs"] / acc["n"]) * HARTREE_TO_KCALPERMOL
        row["train_force_mae_kcalmol_per_A"] = float(acc["f_abs"] / acc["n_comp"]) * HARTREE_TO_KCALPERMOL
    for value in run.acc.values():
        value.zero_()
    run.acc_steps = 0
    if pools.val is not None:
        model.eval()
        val = _evaluate(model, pools.val, settings.rho, settings.batch_size)
        model.train()
        row["val_loss"], row["val_energy_mae_kcalmol"], row["val_force_mae_kcalmol_per_A"] = val
        # Step 0 (the model before training) is never the result: with few molecules the
        # validation loss of a random model can be the lowest, and returning it would silently
        # undo the training. NaN never counts as better.
        if run.step > 0 and val[0] < run.best_loss:
            run.best_loss, run.best_step = val[0], run.step
            run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    row["elapsed_s"] = elapsed
    run.history.append(row)
    return row


class _MetricsCSV:
    """The metrics CSV, line-buffered so it is readable while training runs; a resumed run rewrites
    the rows it restored, so the file always matches the history."""

    def __init__(self, path: str | os.PathLike | None, rows: list[dict]):
        self._file = None
        if path is None:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", newline="", buffering=1)
        self._writer = csv.DictWriter(self._file, fieldnames=HISTORY_COLUMNS)
        self._writer.writeheader()
        self._writer.writerows(rows)

    def write(self, row: dict) -> None:
        if self._file is not None:
            self._writer.writerow(row)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# === training checkpoints (resuming a killed job) ==========================================

CHECKPOINT_FORMAT = 1


def _run_digest(model: NNP, settings: TrainSettings, data_digest: str) -> str:
    """What a training checkpoint belongs to: the starting model, the settings (but the device) and the data.

    The device is left out so that a job retried on another node resumes; the result is then
    the same up to floating-point differences between devices.
    """
    h = hashlib.sha256()
    s = asdict(settings)
    s.pop("device")
    head = {"format": CHECKPOINT_FORMAT, "settings": s, "data": data_digest, "meta": model.meta}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _save_checkpoint(path: Path, digest: str, run: _Run, elapsed: float) -> None:
    """Write the run's whole state to ``path`` atomically: a SIGKILL mid-write leaves the last one intact."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "digest": digest,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        # plain types only, for torch.load(weights_only=True); JSON keeps PCG64's 128-bit integers
        "sampler_rng": json.dumps(run.rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "step": run.step,
        "skipped": run.skipped,
        "acc": run.acc,
        "acc_steps": run.acc_steps,
        "history": run.history,
        "best_loss": run.best_loss,
        "best_step": run.best_step,
        "best_state": run.best_state,
        "elapsed_s": elapsed,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # one fixed name: a killed write's leftover is overwritten
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # the data is on disk before the rename makes it the checkpoint
    os.replace(tmp, path)


def _load_checkpoint(path: Path, digest: str, steps: int, device) -> dict | None:
    """The checkpoint's state if it belongs to this run; None (with a warning) if unreadable or foreign."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a training checkpoint of format {CHECKPOINT_FORMAT}")
    except Exception as err:  # torch.load raises many types for a damaged file; all mean the same here
        log.warning(
            "training checkpoint %s is unreadable (%s: %s); training starts over", path, type(err).__name__, err
        )
        return None
    if state.get("digest") != digest:
        log.warning(
            "training checkpoint %s belongs to other settings, data or starting model (digest %s, this run %s);"
            " training starts over",
            path,
            state.get("digest"),
            digest,
        )
        return None
    if not 0 < int(state.get("step", -1)) < steps:
        log.warning("training checkpoint %s is at step %s of %d; training starts over", path, state.get("step"), steps)
        return None
    return state


def _restore(state: dict, run: _Run, device) -> None:
    """Load a checkpoint into a fresh run; raises on any mismatch (the caller then starts over afresh)."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.rng.bit_generator.state = json.loads(state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    if set(state["acc"]) != set(ACCUMULATORS):
        raise ValueError(f"unexpected accumulators {sorted(state['acc'])}")
    run.acc = {k: v.to(device=device, dtype=torch.float64) for k, v in state["acc"].items()}
    run.step, run.skipped, run.acc_steps = int(state["step"]), int(state["skipped"]), int(state["acc_steps"])
    run.history = [dict(row) for row in state["history"]]
    run.best_loss, run.best_step = float(state["best_loss"]), int(state["best_step"])
    best = state["best_state"]
    run.best_state = None if best is None else {k: v.to(device) for k, v in best.items()}
    run.elapsed_before = float(state["elapsed_s"])


def _resume(run: _Run, start_model: NNP, settings: TrainSettings, device, path: Path, digest: str) -> _Run:
    """``run`` (fresh) restored from the checkpoint at ``path`` when that belongs to this run, else as it is."""
    state = _load_checkpoint(path, digest, settings.steps, device)
    if state is None:
        return run
    try:
        _restore(state, run, device)
    except Exception as err:  # never continue from half a state: start over from a fresh one
        log.warning("training checkpoint %s does not fit (%s: %s); training starts over", path, type(err).__name__, err)
        return _Run.fresh(start_model, settings, device)
    log.info("resuming from training checkpoint %s at step %d of %d", path, run.step, settings.steps)
    return run


# === the run ===============================================================================


def train(
    model: NNP,
    d0: Dataset,
    new: Dataset | None = None,
    settings: TrainSettings | None = None,
    metrics_csv: str | os.PathLike | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
) -> TrainResult:
    """Train (or fine-tune) ``model`` on energies and forces; ``model`` itself is not modified.

    Args:
        model: the starting model (random for the baseline, the previous round's for GOLF).
        d0: the initial dataset; only conformations with status "ok" are used.
        new: extra labelled data (GOLF rounds, DFT trajectories); each batch then mixes D0 and
            new data by ``settings.initial_conf_pct``. None: batches from D0 only.
        settings: see :class:`TrainSettings`. A fresh Adam and cosine schedule are made per call.
        metrics_csv: where to write one row per evaluation (columns ``HISTORY_COLUMNS``).
        progress: show a tqdm bar on stderr.
        checkpoint: a file for the run's state, written every ``checkpoint_every`` steps; a call
            that finds one written for the same starting model, settings and data continues from
            it and returns what an uninterrupted run returns (bit-identical on CPU). An unreadable
            or foreign file is reported and ignored. Removed when training finishes. It must not
            be a Snakemake output: Snakemake deletes the outputs of a failed job.
        checkpoint_every: steps between checkpoints.

    Returns:
        :class:`TrainResult` with the best model by validation loss (on the chosen device,
        ``meta["training"]`` and ``meta["data_digest"]`` filled in) and the metrics history.
    """
    from tqdm.auto import tqdm

    settings = settings or TrainSettings()
    # Energies on two scales (totals vs atomref-subtracted, ~1500 Ha apart) would train garbage.
    require_total_energies(d0, "training (D0)")
    if new is not None:
        require_total_energies(new, "training (new data)")
    if checkpoint_every < 1:
        raise TrainError(f"checkpoint_every = {checkpoint_every!r}; must be >= 1")
    device = resolve_device(settings.device)
    # The AEV's exponential and cutoff terms produce subnormal floats; on CPU arithmetic on
    # them is ~3-5x slower (measured on the force-loss double backward). Flushing them to zero
    # changes values below 1e-38 only. This is a process-wide setting and stays on.
    torch.set_flush_denormal(True)
    run = _Run.fresh(model, settings, device)
    pools = _make_pools(run.model, d0, new, settings, device)
    data_digest = dataset_digest(d0, *([new] if new is not None else []))
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    digest = ""
    if ckpt_path is not None:
        # the validation split belongs to the data: a D0 marked differently is another run
        split = json.dumps([pools.val_split, sorted(map(str, pools.val_ids))])
        digest = _run_digest(model, settings, data_digest + hashlib.sha256(split.encode()).hexdigest()[:16])
        run = _resume(run, model, settings, device, ckpt_path, digest)

    start_time = time.perf_counter() - run.elapsed_before
    metrics = _MetricsCSV(metrics_csv, run.history)
    bar = tqdm(
        total=settings.steps, initial=run.step, file=sys.stderr, disable=not progress, desc="train", mininterval=2.0
    )

    def evaluate() -> None:
        row = _validate(run, pools, settings, time.perf_counter() - start_time)
        metrics.write(row)
        bar.set_postfix(val_loss=f"{row['val_loss']:.3g}", refresh=False)

    try:
        if run.step == 0:
            evaluate()
        run.model.train()
        while run.step < settings.steps:
            _train_step(run, _next_batch(run.rng, pools, settings), settings)
            run.step += 1
            # The schedule advances on skipped steps too, so it always ends at step `steps`.
            run.scheduler.step()
            bar.update(1)
            if run.step % settings.eval_every == 0 or run.step == settings.steps:
                evaluate()
            if ckpt_path is not None and run.step % checkpoint_every == 0 and run.step < settings.steps:
                _save_checkpoint(ckpt_path, digest, run, time.perf_counter() - start_time)
    finally:
        bar.close()
        metrics.close()

    if ckpt_path is not None:
        ckpt_path.unlink(missing_ok=True)
    return _result(run, d0, settings, pools, data_digest)


def _result(run: _Run, d0: Dataset, settings: TrainSettings, pools: _Pools, data_digest: str) -> TrainResult:
    """The best model with its provenance in ``meta`` and the history."""
    model = run.model
    if run.skipped:
        log.warning("%d of %d steps skipped (non-finite loss or gradient)", run.skipped, settings.steps)
    best_step = run.best_step
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    else:
        best_step = settings.steps
    model.eval()
    model.meta = copy.deepcopy(model.meta)
    model.meta["data_digest"] = data_digest
    if not model.meta.get("level_of_theory"):
        model.meta["level_of_theory"] = str(d0.attrs.get("level_of_theory", ""))
    model.meta["training"] = {
        "settings": asdict(settings),
        "best_step": best_step,
        "skipped_steps": run.skipped,
        "n_train_d0": pools.d0.size,
        "n_train_new": pools.new.size if pools.new else 0,
        "n_val": pools.val.size if pools.val else 0,
        "val_split": pools.val_split,
        "val_keys": [list(k) if isinstance(k, tuple) else k for k in sorted(pools.val_ids)],
    }
    return TrainResult(model, pd.DataFrame(run.history, columns=HISTORY_COLUMNS), best_step, run.skipped)
