"""An ASE calculator backed by a golf-workflow NNP checkpoint, for ASE optimisers and MD.

    from golf.optim import NNPCalculator
    atoms.calc = NNPCalculator("results/seed-0/models/golf-6.pt")
    ase.optimize.LBFGS(atoms).run(fmax=0.01)       # ASE's optimiser, or
    atoms.calc.optimize(atoms, steps=100)          # the optimiser the model was evaluated with

ASE works in eV and eV/Angstrom; the model in Hartree and Hartree/Angstrom.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from golf.units import HARTREE_TO_EV


class NNPCalculator(Calculator):
    """Energy (eV) and forces (eV/Angstrom) of a non-periodic molecule from an NNP.

    ``optimizer_settings`` holds how the model was evaluated (``meta["optimizer"]`` of its
    checkpoint, e.g. a displacement cap; {} = the paper's L-BFGS); :meth:`optimize` uses it unless
    told otherwise.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, model, device: str = "cpu", **kwargs):
        """``model``: a :class:`golf.nnp.model.NNP` or the path of a checkpoint."""
        from golf.optim.lbfgs import optimizer_settings

        super().__init__(**kwargs)
        if not isinstance(model, torch.nn.Module):
            from golf.nnp.model import load_model, resolve_device

            model = load_model(model, device=resolve_device(device))
        self.model = model.eval()
        self.optimizer_settings = optimizer_settings(getattr(model, "meta", {}))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise ValueError("NNPCalculator handles molecules only (no periodic boundaries)")
        species = torch.as_tensor(self.atoms.numbers, dtype=torch.int64, device=self.model.device)[None]
        positions = torch.as_tensor(self.atoms.positions, dtype=self.model.dtype, device=self.model.device)[None]
        energies, forces = self.model.energies_forces(species, positions)
        self.results["energy"] = float(energies[0]) * HARTREE_TO_EV
        self.results["forces"] = forces[0].detach().cpu().numpy().astype(np.float64) * HARTREE_TO_EV

    def optimize(self, atoms, steps: int = 100, fmax: float | None = None, exact_steps: bool = False, **overrides):
        """Optimise ``atoms`` in place with :func:`golf.optim.lbfgs.optimize`, as the model was evaluated.

        ``fmax`` in eV/Angstrom (ASE's unit; default: L-BFGS's own tolerance); ``overrides`` replace
        entries of :attr:`optimizer_settings` (e.g. ``max_displacement=None`` for the paper's
        L-BFGS). Returns the :class:`golf.optim.lbfgs.Trajectory` (Hartree units, honest status).
        """
        from golf.optim.lbfgs import optimize_with_model

        if atoms.pbc.any():
            raise ValueError("NNPCalculator handles molecules only (no periodic boundaries)")
        (trajectory,) = optimize_with_model(
            self.model,
            [atoms.numbers],
            [atoms.positions],
            steps,
            fmax=None if fmax is None else fmax / HARTREE_TO_EV,
            exact_steps=exact_steps,
            batch_size=1,
            **overrides,
        )
        atoms.positions = trajectory.positions[-1]
        return trajectory
