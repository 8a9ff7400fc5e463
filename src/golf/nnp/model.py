"""The neural-network potential: an ANI-style TorchANI model or PaiNN, self energies, checkpoints.

Two backbones (``meta["architecture"]``), behind one interface (:class:`NNP`):

- ``"ani"``: an AEV computer (radial and angular atomic environment vectors, cutoffs in Angstrom)
  and one small MLP per element (``torchani.nn.ANINetworks``; an ``Ensemble`` of K of them for
  K > 1), built from TorchANI blocks. TorchANI's xTB repulsion (``simple_ani(repulsion=True)``) is
  left out: the paper's NNP has no physical prior and it would change what the network learns.
- ``"painn"``: the paper's backbone, schnetpack 2.0.4's PaiNN re-implemented in :mod:`golf.nnp.painn`
  (its parameter names are the GOLF authors' state_dict keys, so :func:`import_schnetpack_painn`
  loads their checkpoints as they are).

Both add per-element self energies in Hartree outside the network, in float64. For a model trained
here they are fitted by least squares on D0 (:func:`fit_self_energies`); for an imported authors'
model they are the atomrefs of the authors' database, which their network was trained to be
relative to. Either way :class:`NNP` returns total energies.

Shapes: B molecules (conformations) in a batch, N padded atoms, K ensemble members.
Padding convention (TorchANI): species == -1 marks a dummy atom; its coordinates and forces are 0.

Energies returned by :class:`NNP` are total energies in Hartree, float64: the network part is
computed in the model's dtype (float32 by default) and the self energies (~ -38 Ha per carbon)
are added in float64, so totals of ~ -1000 Ha keep sub-microhartree resolution.

Checkpoints are ``{"state_dict": ..., "meta": {...}}`` with a JSON-able ``meta``; they are read
with ``torch.load(weights_only=True)`` and the model is rebuilt from ``meta``.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
import torchani.grad
from torch import Tensor
from torchani.nn import SpeciesConverter
from torchani.utils import pad_atomic_properties

from golf.data.molecule import ELEMENTS, SYMBOLS

if TYPE_CHECKING:
    from golf.data.dataset import Conformer, Dataset

__all__ = [
    "SUPPORTED_ELEMENTS",
    "SIZES",
    "NNPError",
    "UnsupportedElement",
    "CheckpointError",
    "NNP",
    "PaddedBatch",
    "build_model",
    "build_painn",
    "import_schnetpack_painn",
    "fit_self_energies",
    "save_model",
    "load_model",
    "resolve_device",
    "padded_batch",
    "dataset_digest",
]

SUPPORTED_ELEMENTS = ELEMENTS  # the elements a model can cover: golf.data.molecule's table

# Hidden layer widths of each element's MLP. "small" is the default: it trains on ~100-200
# conformations in minutes on 2 CPU cores. "large" is ANI-2x's carbon network.
SIZES: dict[str, tuple[int, ...]] = {
    "tiny": (32,),
    "small": (64, 32),
    "medium": (128, 96, 64),
    "large": (256, 192, 160),
}

CHECKPOINT_FORMAT = "golf-nnp"
CHECKPOINT_VERSION = 1


class NNPError(Exception):
    """Bad model settings or input."""


class UnsupportedElement(NNPError, ValueError):
    """An element the model (or this project) does not support."""


class CheckpointError(NNPError):
    """A file that is not a readable golf-workflow model checkpoint."""


def _check_symbols(symbols: Sequence[str], allowed: Sequence[str], what: str) -> None:
    bad = sorted({s for s in symbols if s not in allowed})
    if bad:
        raise UnsupportedElement(f"unsupported element(s) {', '.join(bad)}; {what} supports {' '.join(allowed)}")


def _canonical_elements(elements: Sequence[str]) -> tuple[str, ...]:
    if isinstance(elements, str):
        raise NNPError(f"elements must be a list of symbols such as ['H', 'C'], got the string {elements!r}")
    _check_symbols(elements, tuple(SUPPORTED_ELEMENTS), "golf-workflow")
    if not elements:
        raise NNPError("elements must not be empty")
    return tuple(sorted(set(elements), key=SUPPORTED_ELEMENTS.__getitem__))


# The attribute that holds each backbone, so state_dict keys stay what they are: "ani.*" for the
# ANI checkpoints written so far, "model.*" for PaiNN, the GOLF authors' own key prefix.
_NETWORK_ATTRIBUTE = {"ani": "ani", "painn": "model"}


class NNP(torch.nn.Module):
    """A potential (ANI-style or PaiNN) with float64 self energies and a JSON-able ``meta``.

    ``__init__`` takes a finished network; use :func:`build_model`, :func:`build_painn`,
    :func:`import_schnetpack_painn` or :func:`load_model`.

    Args:
        network: a ``torchani.arch.ANI`` built for ``elements`` (its own energy shifter is not used),
            or a :class:`golf.nnp.painn.PaiNNPotential` whose element indices follow ``elements``.
        elements: element symbols in the model's internal order.
        self_energies: Hartree per element symbol.
        meta: JSON-able description: architecture, hyperparameters, elements, self energies, provenance.
    """

    def __init__(
        self, network: torch.nn.Module, elements: Sequence[str], self_energies: Mapping[str, float], meta: dict
    ):
        super().__init__()
        self.architecture = meta.get("architecture", "ani")
        if self.architecture not in _NETWORK_ATTRIBUTE:
            raise NNPError(f"unknown architecture {self.architecture!r}; allowed: {', '.join(_NETWORK_ATTRIBUTE)}")
        self.add_module(_NETWORK_ATTRIBUTE[self.architecture], network)
        self._elements = tuple(elements)
        self._self_energies = tuple(float(self_energies[s]) for s in self._elements)
        self.meta = meta
        symbols = tuple(getattr(network, "symbols", self._elements))
        if symbols != self._elements:
            raise NNPError(f"the TorchANI model is built for {symbols}, not {self._elements}")
        # atomic number -> element index (-1 padding): TorchANI's converter, its table a buffer that
        # moves with .to() but stays out of the state_dict (the authors' checkpoints have none)
        self.species_converter = SpeciesConverter(self._elements)
        self.species_converter.register_buffer("conv_tensor", self.species_converter.conv_tensor, persistent=False)
        self._sae_cache: dict[torch.device, Tensor] = {}

    # --- properties ---------------------------------------------------------------------------
    @property
    def elements(self) -> tuple[str, ...]:
        return self._elements

    @property
    def self_energies(self) -> dict[str, float]:
        """Self energy of each element, Hartree."""
        return dict(zip(self._elements, self._self_energies, strict=True))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def network(self) -> torch.nn.Module:
        """The backbone (TorchANI ANI or PaiNN), without self energies."""
        return getattr(self, _NETWORK_ATTRIBUTE[self.architecture])

    @property
    def ensemble_size(self) -> int:
        return int(self.meta["hyperparameters"].get("ensemble_size", 1))

    # --- species ------------------------------------------------------------------------------
    def element_indices(self, species: Tensor) -> Tensor:
        """Atomic numbers (B, N) with -1 padding -> element indices (B, N) with -1 padding.

        Raises UnsupportedElement for an atomic number the model was not built for. This check
        synchronises with the device; training converts each data pool once and then calls
        :meth:`energies_from_indices` directly.
        """
        species = species.to(self.species_converter.conv_tensor.device)
        try:
            if bool((species < -1).any()):  # a negative index would wrap around the table
                raise IndexError
            return self.species_converter(species)
        except (ValueError, IndexError):
            known = {-1, *(SUPPORTED_ELEMENTS[s] for s in self._elements)}
            names = [SYMBOLS.get(z, f"Z={z}") for z in sorted({int(z) for z in species.unique()} - known)]
            raise UnsupportedElement(
                f"model has no network for element(s) {', '.join(names)}; it supports {' '.join(self._elements)}"
            ) from None

    def _sae_table(self, device: torch.device) -> Tensor:
        """(elements + 1,) float64 self energies, last entry 0 for padding (index -1)."""
        table = self._sae_cache.get(device)
        if table is None:
            table = torch.tensor([*self._self_energies, 0.0], dtype=torch.float64, device=device)
            self._sae_cache[device] = table
        return table

    def self_energy_sums(self, elem_idxs: Tensor) -> Tensor:
        """Sum of self energies per molecule, (B,) float64 Hartree, from element indices (B, N)."""
        return self._sae_table(elem_idxs.device)[elem_idxs].sum(dim=1)

    # --- energies -----------------------------------------------------------------------------
    def network_energies(self, elem_idxs: Tensor, coordinates: Tensor, ensemble_values: bool = False) -> Tensor:
        """Energies without self energies, Hartree, in the model's dtype.

        Args:
            elem_idxs: (B, N) element indices, -1 padding (see :meth:`element_indices`).
            coordinates: (B, N, 3) Angstrom, in the model's dtype.
            ensemble_values: return (K, B) member energies instead of their mean (B,).
        """
        assert coordinates.shape == (*elem_idxs.shape, 3), (coordinates.shape, elem_idxs.shape)
        if self.architecture == "painn":
            energies = self.network(elem_idxs, coordinates)  # (B,)
            return energies.unsqueeze(0) if ensemble_values else energies
        aevs = self.ani.aev_computer(elem_idxs, coordinates)  # (B, N, aev_dim)
        nets = self.ani.neural_networks
        if ensemble_values and not hasattr(nets, "members"):
            return nets(elem_idxs, aevs, False, False).unsqueeze(0)  # (1, B)
        return nets(elem_idxs, aevs, False, ensemble_values)

    def energies_from_indices(self, elem_idxs: Tensor, coordinates: Tensor) -> Tensor:
        """Total energies (B,) float64 Hartree from element indices and coordinates (model dtype)."""
        return self.network_energies(elem_idxs, coordinates).double() + self.self_energy_sums(elem_idxs)

    def _prepare(self, species: Tensor, coordinates: Tensor) -> tuple[Tensor, Tensor]:
        if species.dim() != 2 or coordinates.shape != (*species.shape, 3):
            raise NNPError(
                f"species must be (B, N) and coordinates (B, N, 3); got {tuple(species.shape)}"
                f" and {tuple(coordinates.shape)}"
            )
        elem_idxs = self.element_indices(species.to(self.device))
        return elem_idxs, coordinates.to(device=self.device, dtype=self.dtype)

    def forward(self, species: Tensor, coordinates: Tensor) -> Tensor:
        """Total energies.

        Args:
            species: (B, N) int64 atomic numbers, -1 for padding.
            coordinates: (B, N, 3) Angstrom, float32 or float64.

        Returns:
            (B,) float64 total energies in Hartree, self energies included.
        """
        elem_idxs, coords = self._prepare(species, coordinates)
        return self.energies_from_indices(elem_idxs, coords)

    def member_energies(self, species: Tensor, coordinates: Tensor) -> Tensor:
        """(K, B) float64 total energies of each ensemble member, Hartree (K = 1 without an ensemble)."""
        elem_idxs, coords = self._prepare(species, coordinates)
        members = self.network_energies(elem_idxs, coords, ensemble_values=True).double()  # (K, B)
        return members + self.self_energy_sums(elem_idxs).unsqueeze(0)

    def energies_forces(
        self, species: Tensor, coordinates: Tensor, create_graph: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Total energies and forces.

        Args:
            species: (B, N) int64 atomic numbers, -1 for padding.
            coordinates: (B, N, 3) Angstrom, float32 or float64.
            create_graph: keep the graph of the forces (for a loss on forces).

        Returns:
            energies (B,) float64 Hartree; forces (B, N, 3) Hartree/Angstrom in the dtype of
            ``coordinates``, 0 on padding atoms.
        """
        elem_idxs, coords = self._prepare(species, coordinates)
        energies, forces = self.energies_forces_from_indices(elem_idxs, coords, create_graph)
        return energies, forces.to(coordinates.dtype)

    def energies_forces_from_indices(
        self, elem_idxs: Tensor, coordinates: Tensor, create_graph: bool = False
    ) -> tuple[Tensor, Tensor]:
        """:meth:`energies_forces` for element indices and coordinates already on the model's device
        and in its dtype: no element check, no copies (for loops such as batched L-BFGS that
        convert species once with :meth:`element_indices`). Forces are in the model's dtype.
        """
        coords = coordinates.detach().requires_grad_(True)
        with torch.enable_grad():
            energies = self.energies_from_indices(elem_idxs, coords)
            forces = torchani.grad.forces(energies, coords, create_graph=create_graph)
        forces = torch.where((elem_idxs >= 0).unsqueeze(-1), forces, torch.zeros_like(forces))  # (B, N, 3)
        if not create_graph:
            energies = energies.detach()
        return energies, forces

    def _apply(self, fn, *args, **kwargs):
        self._sae_cache = {}  # the device may change
        return super()._apply(fn, *args, **kwargs)


def build_model(
    elements: Sequence[str],
    *,
    self_energies: Mapping[str, float] | Literal["zero"],
    radial_cutoff: float = 5.2,
    angular_cutoff: float = 3.5,
    radial_shifts: int = 16,
    angular_shifts: int = 8,
    sections: int = 4,
    layer_dims: Sequence[int] | str = "small",
    activation: str = "gelu",
    ensemble_size: int = 1,
    level_of_theory: str = "",
    seed: int | None = None,
) -> NNP:
    """An untrained ANI-style NNP (``torchani.arch.simple_ani``'s AEV, without xTB repulsion).

    Args:
        elements: element symbols; any of H C N O F S Cl (sorted by atomic number inside).
        self_energies: Hartree per element (see :func:`fit_self_energies`), or "zero". Nothing is
            looked up or downloaded.
        radial_cutoff, angular_cutoff: AEV cutoffs in Angstrom (defaults: TorchANI's simple_ani).
        radial_shifts, angular_shifts, sections: AEV resolution (defaults: simple_ani).
        layer_dims: hidden widths of each element's MLP, or a name in :data:`SIZES` (default
            "small" = (64, 32)).
        activation: a TorchANI activation name.
        ensemble_size: K independent networks; energies are their mean (K > 1 gives an uncertainty
            through :meth:`NNP.member_energies`).
        level_of_theory: provenance, e.g. "wb97x-d/def2-svp".
        seed: seed for the initial weights (global RNG state is left untouched).
    """
    from torchani.aev import ANIAngular, ANIRadial
    from torchani.arch import Assembler
    from torchani.nn import ANINetworks

    symbols = _canonical_elements(elements)
    if isinstance(layer_dims, str):
        if layer_dims not in SIZES:
            raise NNPError(f"unknown network size {layer_dims!r}; allowed: {', '.join(SIZES)}")
        size_name, dims = layer_dims, SIZES[layer_dims]
    else:
        size_name, dims = None, tuple(int(d) for d in layer_dims)
        if not dims or min(dims) < 1:
            raise NNPError(f"layer_dims must be positive widths, got {list(layer_dims)}")
    if ensemble_size < 1:
        raise NNPError(f"ensemble_size must be >= 1, got {ensemble_size}")
    if not 0 < angular_cutoff <= radial_cutoff:
        raise NNPError(f"need 0 < angular_cutoff <= radial_cutoff, got {angular_cutoff} and {radial_cutoff}")
    sae = _self_energy_table(symbols, self_energies)
    asm = Assembler(periodic_table_index=True)
    asm.set_symbols(symbols)
    asm.set_global_cutoff_fn("smooth")
    # Same AEV terms as torchani.arch.simple_ani (start 0.9 A, its precisions and zeta).
    asm.set_aev_computer(
        radial=ANIRadial.cover_linearly(start=0.9, cutoff=radial_cutoff, eta=19.7, num_shifts=radial_shifts),
        angular=ANIAngular.cover_linearly(
            start=0.9, eta=12.5, zeta=14.1, num_shifts=angular_shifts, num_sections=sections, cutoff=angular_cutoff
        ),
        strategy="pyaev",  # the pure-PyTorch AEV: double backward (force training) works everywhere
    )
    asm.set_atomic_networks(
        cls=ANINetworks,
        ctor="build",
        kwargs={"dims": {}, "default_dims": dims, "activation": activation, "bias": False},
    )
    asm.set_neighborlist("all_pairs")
    asm.set_self_energies(sae)
    if seed is None:
        ani = asm.assemble(ensemble_size)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ani = asm.assemble(ensemble_size)

    hyperparameters = {
        "radial_cutoff": float(radial_cutoff),
        "angular_cutoff": float(angular_cutoff),
        "radial_shifts": int(radial_shifts),
        "angular_shifts": int(angular_shifts),
        "sections": int(sections),
        "layer_dims": list(dims),
        "size": size_name,
        "activation": activation,
        "ensemble_size": int(ensemble_size),
        "seed": seed,
    }
    return NNP(ani, symbols, sae, _meta("ani", symbols, sae, hyperparameters, level_of_theory))


def _self_energy_table(symbols: Sequence[str], self_energies: Mapping[str, float] | Literal["zero"]) -> dict:
    if isinstance(self_energies, str) and self_energies == "zero":
        return dict.fromkeys(symbols, 0.0)
    if isinstance(self_energies, Mapping):
        missing = [s for s in symbols if s not in self_energies]
        if missing:
            raise NNPError(f"self_energies lack element(s) {', '.join(missing)}")
        return {s: float(self_energies[s]) for s in symbols}
    raise NNPError(f"self_energies must be a dict symbol -> Hartree or 'zero', got {self_energies!r}")


def _meta(architecture: str, symbols, sae: dict, hyperparameters: dict, level_of_theory: str) -> dict:
    import torchani

    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "architecture": architecture,
        "elements": list(symbols),
        "self_energies": sae,  # Hartree
        "hyperparameters": hyperparameters,
        "level_of_theory": level_of_theory,
        "data_digest": None,
        "units": {"energies": "Hartree", "forces": "Hartree/Angstrom", "coordinates": "Angstrom"},
        "torchani_version": torchani.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }


def build_painn(
    elements: Sequence[str],
    *,
    self_energies: Mapping[str, float] | Literal["zero"],
    n_atom_basis: int = 128,
    n_interactions: int = 3,
    n_rbf: int = 50,
    cutoff: float = 5.0,
    level_of_theory: str = "",
    seed: int | None = None,
) -> NNP:
    """An untrained PaiNN (schnetpack 2.0.4's, see :mod:`golf.nnp.painn`); the defaults are the paper's.

    Args:
        elements: element symbols; any of H C N O F S Cl.
        self_energies: Hartree per element added to the network's energy (fitted, or atomrefs), or "zero".
        n_atom_basis: feature width (paper 128); the Atomwise head is n_atom_basis -> n_atom_basis // 2 -> 1.
        n_interactions: message-passing layers (paper 3).
        n_rbf: Bessel radial basis functions (paper 50).
        cutoff: cosine cutoff, Angstrom (paper 5.0); only pairs inside it are computed.
        level_of_theory: provenance, e.g. "wb97x-d/def2-svp".
        seed: seed for the initial weights (global RNG state is left untouched).
    """
    from golf.nnp.painn import PaiNNPotential

    symbols = _canonical_elements(elements)
    if min(n_atom_basis, n_interactions, n_rbf) < 1 or not cutoff > 0:
        raise NNPError(
            f"PaiNN needs positive sizes and cutoff; got n_atom_basis={n_atom_basis}, "
            f"n_interactions={n_interactions}, n_rbf={n_rbf}, cutoff={cutoff}"
        )
    sae = _self_energy_table(symbols, self_energies)
    numbers = [SUPPORTED_ELEMENTS[s] for s in symbols]
    sizes = (numbers, int(n_atom_basis), int(n_interactions), int(n_rbf), float(cutoff))
    if seed is None:
        network = PaiNNPotential(*sizes)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = PaiNNPotential(*sizes)
    hyperparameters = {
        "n_atom_basis": int(n_atom_basis),
        "n_interactions": int(n_interactions),
        "n_rbf": int(n_rbf),
        "cutoff": float(cutoff),
        "seed": seed,
    }
    return NNP(network, symbols, sae, _meta("painn", symbols, sae, hyperparameters, level_of_theory))


def import_schnetpack_painn(
    checkpoint: str | os.PathLike, atomrefs: Mapping[str, float], *, level_of_theory: str = "wb97x-d/def2-svp"
) -> NNP:
    """One of the GOLF authors' PaiNN checkpoints (``NNP_checkpoint_actor``) as our model.

    Their network predicts energies relative to the atomrefs of the database it was trained on
    (reference/golf-paper.md §1.4), so those atomrefs become the model's self energies and the
    model returns total energies in Hartree, as every model of this project does.

    Args:
        checkpoint: a plain state_dict with keys ``model.representation.*`` and
            ``model.output_modules.0.outnet.*`` (schnetpack 2.0's PaiNN + Atomwise).
        atomrefs: Hartree per element symbol, e.g. from :func:`golf.data.formats.read_atomrefs` of the
            authors' database; every element with a value becomes a supported element of the model.
        level_of_theory: the level the checkpoint was trained at (the authors': ωB97X-D/def2-SVP).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable PyTorch state_dict ({type(err).__name__})") from None
    if not isinstance(state, Mapping) or not any(str(k).startswith("model.representation.") for k in state):
        raise CheckpointError(f"{path}: not a schnetpack PaiNN checkpoint (no 'model.representation.*' keys)")
    try:
        n_atom_basis = state["model.representation.embedding.weight"].shape[1]
        n_rbf = state["model.representation.radial_basis.freqs"].shape[0]
        cutoff = float(state["model.representation.cutoff_fn.cutoff"].reshape(-1)[0])
        n_interactions = 1 + max(
            int(k.split(".")[3]) for k in state if k.startswith("model.representation.interactions.")
        )
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: incomplete PaiNN checkpoint ({err})") from None
    model = build_painn(
        [s for s in SUPPORTED_ELEMENTS if s in atomrefs],
        self_energies=atomrefs,
        n_atom_basis=n_atom_basis,
        n_interactions=n_interactions,
        n_rbf=n_rbf,
        cutoff=cutoff,
        level_of_theory=level_of_theory,
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit schnetpack's PaiNN ({first})") from None
    model.meta["source"] = {"checkpoint": str(path), "self_energies": "atomrefs of the authors' database"}
    return model.eval()


def fit_self_energies(dataset: Dataset, elements: Sequence[str]) -> dict[str, float]:
    """Per-element energies (Hartree) from a linear least-squares fit of energies on element counts.

    Uses only conformations with status "ok" and a finite energy. Elements of ``elements`` that do
    not occur in the data get 0.0. With collinear counts (e.g. one formula only) the minimum-norm
    solution is returned, which still centres the residual energies.
    """
    symbols = _canonical_elements(elements)
    column = {SUPPORTED_ELEMENTS[s]: j for j, s in enumerate(symbols)}
    rows, energies = [], []
    for c in dataset.conformers:
        if c.status != "ok" or not np.isfinite(c.energy):
            continue
        counts = np.zeros(len(symbols))
        for z, n in zip(*np.unique(c.species, return_counts=True), strict=True):
            if int(z) not in column:
                name = SYMBOLS.get(int(z), f"Z={int(z)}")
                raise UnsupportedElement(f"data contain element {name}, not among the model's {' '.join(symbols)}")
            counts[column[int(z)]] = n
        rows.append(counts)
        energies.append(c.energy)
    if not rows:
        raise NNPError("no labelled (status 'ok') conformations to fit self energies on")
    a, b = np.array(rows), np.array(energies)
    present = a.sum(axis=0) > 0
    coef = np.zeros(len(symbols))
    coef[present] = np.linalg.lstsq(a[:, present], b, rcond=None)[0]
    return {s: float(e) for s, e in zip(symbols, coef, strict=True)}


def dataset_digest(*datasets: Dataset) -> str:
    """A short digest of the labelled conformations (species, coordinates, energies, forces)."""
    h = hashlib.sha256()
    for ds in datasets:
        for c in ds.conformers:
            if c.status != "ok":
                continue
            h.update(np.ascontiguousarray(c.species, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(c.coordinates, dtype=np.float64).tobytes())
            h.update(np.float64(c.energy).tobytes())
            if c.forces is not None:
                h.update(np.ascontiguousarray(c.forces, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def save_model(path: str | os.PathLike, model: NNP) -> None:
    """Write ``{"state_dict", "meta"}`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"state_dict": state, "meta": copy.deepcopy(model.meta)}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> NNP:
    """Read a checkpoint written by :func:`save_model` and rebuild the model from its ``meta``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable model checkpoint ({type(err).__name__})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "meta" not in blob:
        raise CheckpointError(f"{path}: not a golf-workflow model (expected keys 'state_dict' and 'meta')")
    meta = blob["meta"]
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: model format {meta.get('format')!r} version {meta.get('version')!r};"
            f" this code reads {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}"
        )
    hp = dict(meta["hyperparameters"])
    hp.pop("size", None)
    builders = {"ani": build_model, "painn": build_painn}
    architecture = meta.get("architecture", "ani")
    if architecture not in builders:
        raise CheckpointError(f"{path}: unknown architecture {architecture!r}; this code reads {', '.join(builders)}")
    model = builders[architecture](
        meta["elements"],
        self_energies=meta["self_energies"],
        level_of_theory=meta.get("level_of_theory", ""),
        **hp,
    )
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model described by its meta ({first})") from None
    model.meta = meta
    return model.to(resolve_device(device)).eval()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N" (checked)."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NNPError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise NNPError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NNPError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NNPError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


class PaddedBatch(NamedTuple):
    """Conformations padded to the largest atom count (TorchANI's padding convention)."""

    species: Tensor  # (B, N) int64 atomic numbers, -1 padding
    coordinates: Tensor  # (B, N, 3) float64 Angstrom, 0 on padding
    energies: Tensor  # (B,) float64 Hartree, NaN when unlabelled
    forces: Tensor  # (B, N, 3) float64 Hartree/Angstrom, 0 on padding, NaN when the conformer has none
    n_atoms: Tensor  # (B,) int64


def padded_batch(conformers: Sequence[Conformer]) -> PaddedBatch:
    """Pad a list of :class:`golf.data.dataset.Conformer` into CPU tensors (see :class:`PaddedBatch`),
    with TorchANI's padding (``torchani.utils.pad_atomic_properties``)."""
    n_atoms = torch.tensor([len(c.species) for c in conformers], dtype=torch.int64)
    if not conformers:
        no_atoms = torch.zeros((0, 0, 3), dtype=torch.float64)
        return PaddedBatch(n_atoms.reshape(0, 0), no_atoms, torch.zeros(0, dtype=torch.float64), no_atoms, n_atoms)
    rows = []
    for c in conformers:
        forces = np.full(c.coordinates.shape, np.nan) if c.forces is None else c.forces
        rows.append({  # copies: arrays read from a file are read-only views
            "species": torch.tensor(c.species)[None],
            "coordinates": torch.tensor(c.coordinates)[None],
            "forces": torch.tensor(forces)[None],
            "energies": torch.tensor([c.energy], dtype=torch.float64),
        })  # fmt: skip
    padded = pad_atomic_properties(rows)  # species -1, coordinates and forces 0 on padding
    return PaddedBatch(padded["species"], padded["coordinates"], padded["energies"], padded["forces"], n_atoms)
