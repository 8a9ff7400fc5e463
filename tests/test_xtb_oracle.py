"""The oracle with program xtb: GFN2-xTB through tblite behind the same Oracle, cache, statuses and
provenance as Psi4 (issue 21). Real tblite, milliseconds per call."""

import numpy as np
import pytest

from golf import data
from golf.oracle.labels import ProvenanceError, common_provenance
from golf.oracle.oracle import LabelCache, Oracle, OracleSettings
from golf.oracle.trajectories import oracle_trajectories

tblite = pytest.importorskip("tblite.interface", reason="tblite is not installed: run bin/setup")

BOHR = 0.52917721067
WATER = ([8, 1, 1], [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
METHANOL = (
    [6, 8, 1, 1, 1, 1],
    [[-0.046, 0.663, 0.0], [-0.046, -0.758, 0.0], [-1.086, 0.975, 0.0], [0.444, 1.08, 0.888],
     [0.444, 1.08, -0.888], [0.86, -1.056, 0.0]],
)  # fmt: skip
GFN2 = {"program": "xtb", "method": "gfn2-xtb", "timeout_s": 60}


@pytest.fixture(scope="module")
def oracle():
    with Oracle(OracleSettings(**GFN2)) as o:
        yield o


def _dataset(*molecules) -> data.Dataset:
    ds = data.Dataset({}, [], {})
    for i, (species, coords) in enumerate(molecules):
        ds.molecules[i] = data.Molecule(i, ["O", "CO"][i % 2])
        ds.conformers.append(data.Conformer(i, 0, np.array(species), np.array(coords, dtype=float)))
    return ds


@pytest.mark.parametrize("molecule", [WATER, METHANOL], ids=["water", "methanol"])
def test_energy_and_forces_are_tblites_in_hartree_per_angstrom(oracle, molecule):
    species, coords = molecule
    direct = tblite.Calculator("GFN2-xTB", np.array(species), np.array(coords) / BOHR, charge=0, uhf=0)
    direct.set("verbosity", 0)
    want = direct.singlepoint()
    got = oracle.gradient(species, coords)
    assert got.status == "ok" and got.energy == pytest.approx(want.get("energy"), abs=1e-10)
    np.testing.assert_allclose(got.forces, -want.get("gradient") / BOHR, atol=1e-10)
    # forces are minus the derivative of the energy in Angstrom (central differences)
    h, moved = 1e-4, np.array(coords, dtype=float)
    moved[1, 0] += h
    up = oracle.gradient(species, moved).energy
    moved[1, 0] -= 2 * h
    down = oracle.gradient(species, moved).energy
    # to the SCC convergence (default accuracy); a Bohr/Angstrom mix-up would be off by 1.89x
    assert -(up - down) / (2 * h) == pytest.approx(got.forces[1, 0], rel=1e-3)


def test_provenance_names_the_program_and_mixing_programs_is_an_error(oracle):
    labelled = oracle.label(_dataset(WATER), progress=False)
    assert labelled.attrs["oracle"] == {
        "program": "xtb", "version": oracle.version, "method": "gfn2-xtb", "basis": "", "options": {},
    }  # fmt: skip
    assert oracle.version.startswith("tblite ") and oracle.psi4_version is None
    assert OracleSettings(**GFN2).level_of_theory == "gfn2-xtb"
    psi4 = _dataset(WATER)
    psi4.attrs["oracle"] = {"program": "psi4", "version": "1.3.2", "method": "hf", "basis": "sto-3g", "options": {}}
    with pytest.raises(ProvenanceError, match="xtb.*psi4|psi4.*xtb"):
        common_provenance({"xtb.h5": labelled, "psi4.h5": psi4})


def test_cache_keys_tell_programs_apart_and_a_second_run_calls_nothing(tmp_path):
    species, coords = WATER
    psi4_key = LabelCache.key(species, coords, 0, 1, "hf", "sto-3g", "1.3.2")
    assert psi4_key == LabelCache.key(species, coords, 0, 1, "hf", "sto-3g", "1.3.2", None, "psi4")
    xtb = LabelCache.key(species, coords, 0, 1, "gfn2-xtb", "", "tblite 0.8.0", None, "xtb")
    assert len({psi4_key, xtb, LabelCache.key(species, coords, 0, 1, "gfn1-xtb", "", "tblite 0.8.0", None, "xtb")}) == 3

    settings = OracleSettings(**GFN2, cache_dir=str(tmp_path / "cache"))
    ds = _dataset(WATER, METHANOL)
    with Oracle(settings) as first:
        labelled = first.label(ds, progress=False)
        assert first.calls == 2
    with Oracle(settings) as second:
        again = second.label(ds, progress=False)
        assert second.calls == 0 and second.cache_hits == 2
    assert [c.energy for c in again] == [c.energy for c in labelled]


def test_scc_failure_and_impossible_spin_are_recorded_statuses(tmp_path):
    # every rung of the SCC ladder keeps the caller's max-iter of 1: nothing converges
    with Oracle(OracleSettings(**GFN2, options={"max-iter": 1}, cache_dir=str(tmp_path))) as o:
        failed = o.gradient(*WATER)
        assert failed.status == "scf_not_converged" and "SCC did not converge after 3" in failed.message
    with Oracle(OracleSettings(**GFN2)) as o:
        ds = _dataset(WATER, METHANOL)
        ds.molecules[0].multiplicity = 2  # 10 electrons, one unpaired: impossible
        out = o.label(ds, progress=False)
    assert [c.status for c in out] == ["oracle_error", "ok"]  # every row kept, with its status


def test_settings_check_the_program_and_its_method():
    with pytest.raises(ValueError, match="xtb program's method"):
        OracleSettings(program="xtb", method="hf")
    with pytest.raises(ValueError, match="program must be one of"):
        OracleSettings(program="orca")
    assert OracleSettings(program="xtb", method="GFN1-xTB", basis="def2-svp").basis == ""  # xtb has no basis
    with pytest.raises(ValueError, match="scf_type are not tblite's"):  # a Psi4 option left in the config
        OracleSettings(**GFN2, options={"scf_type": "pk"})


def test_geometric_reference_minimum_with_xtb(oracle):
    """The reference optimiser runs on the xTB oracle as on Psi4: converged, forces near zero."""
    out = oracle_trajectories(oracle, _dataset(WATER), fmax=4.5e-4, max_steps=40, optimiser="geometric")
    last = out.conformers[-1]
    assert last.props["end"] == "converged" and last.energy < out.conformers[0].energy
    assert np.linalg.norm(last.forces, axis=1).max() < 2e-3  # Hartree/Angstrom
