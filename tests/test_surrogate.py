"""golf.chem.mmff: the MMFF surrogate oracle equals RDKit's own MMFF, errors are clear, the pool caches."""

import time

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from golf.chem.mmff import MMFF, SurrogateError, SurrogatePool


def _embedded(smiles, seed=7, n=3):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    assert ids
    return mol, ids


def _rdkit_energy(mol, cid, ignore_interfrag=True):
    props = AllChem.MMFFGetMoleculeProperties(mol)
    ff = AllChem.MMFFGetMoleculeForceField(mol, props, confId=cid, ignoreInterfragInteractions=ignore_interfrag)
    return ff.CalcEnergy()


@pytest.mark.parametrize("smiles", ["CCO", "OC(=O)c1ccccc1", "C[NH3+]", "ClC(F)S"])
def test_energy_equals_rdkit_mmff(smiles):
    mol, ids = _embedded(smiles)
    ff = MMFF(smiles)
    energies = []
    for cid in ids:
        xyz = mol.GetConformer(cid).GetPositions()
        e = ff.energy(xyz)
        assert e == pytest.approx(_rdkit_energy(mol, cid), rel=1e-10, abs=1e-8)
        energies.append(e)
    assert len(set(energies)) == len(energies)  # the positions really change between calls
    # A displaced geometry gives another energy (positions are taken from the argument).
    displaced = mol.GetConformer(ids[0]).GetPositions() + np.random.default_rng(0).normal(0, 0.05, (ff.n_atoms, 3))
    assert ff.energy(displaced) != pytest.approx(energies[0], rel=1e-6)


def test_energy_of_several_fragments_includes_interfragment_terms():
    mol, ids = _embedded("O.O", seed=1, n=1)
    xyz = mol.GetConformer(ids[0]).GetPositions()
    ff = MMFF("O.O")
    assert ff.energy(xyz) == pytest.approx(_rdkit_energy(mol, ids[0], ignore_interfrag=False), rel=1e-10)
    # minimize() works on the same energy surface as energy()
    positions, e_min = ff.minimize(xyz)
    assert e_min == pytest.approx(ff.energy(positions), rel=1e-9, abs=1e-9)
    assert e_min < ff.energy(xyz)


def test_minimize_reaches_rdkit_minimum():
    mol, ids = _embedded("CCCO", seed=2, n=1)
    xyz = mol.GetConformer(ids[0]).GetPositions()
    ff = MMFF("CCCO")
    positions, e_min = ff.minimize(xyz)
    AllChem.MMFFOptimizeMolecule(mol, confId=ids[0], maxIters=2000)
    assert e_min == pytest.approx(_rdkit_energy(mol, ids[0]), abs=1e-3)
    assert e_min < ff.energy(xyz)
    assert positions.shape == (ff.n_atoms, 3)


def test_wrong_shape_and_nonfinite():
    ff = MMFF("CCO")
    with pytest.raises(ValueError, match=r"expected \(9, 3\)"):
        ff.energy(np.zeros((8, 3)))
    with pytest.raises(ValueError):
        ff.energy(np.zeros(27))
    xyz = _embedded("CCO")[0].GetConformer().GetPositions()
    for bad in (np.nan, np.inf):
        broken = xyz.copy()
        broken[2, 1] = bad
        assert ff.energy(broken) == float("inf")
    assert np.isfinite(ff.energy(xyz))  # the force field survives a rejected call


def test_bad_smiles():
    with pytest.raises(SurrogateError, match="invalid SMILES"):
        MMFF("C1CC")


def test_pool_caches_per_smiles():
    pool = SurrogatePool()
    a = pool["CCO"]
    assert pool["CCO"] is a
    assert pool["CO"] is not a and pool["CO"].n_atoms == 6


def test_energy_call_is_cheap():
    """Report the cost of one MMFF energy (the surrogate must never dominate a GOLF round)."""
    ff = MMFF("OC(=O)c1ccccc1")
    mol, ids = _embedded("OC(=O)c1ccccc1", n=1)
    xyz = mol.GetConformer(ids[0]).GetPositions()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        ff.energy(xyz)
    per_call = (time.perf_counter() - t0) / n
    print(f"MMFF.energy on benzoic acid (15 atoms): {per_call * 1e6:.1f} us per call")
    assert per_call < 0.05  # generous: only catches a force field rebuilt on every call
