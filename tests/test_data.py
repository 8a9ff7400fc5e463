"""golf.data.dataset: HDF5 round trips, atomic writes, clear errors on foreign files, TorchANI compatibility."""

import os

import numpy as np
import pytest

from golf import data
from golf.data.dataset import Conformer, DataError, Dataset, Molecule

# Atom orders of Chem.AddHs(Chem.MolFromSmiles(smiles)).
ETHANOL_Z = [6, 6, 8, 1, 1, 1, 1, 1, 1]  # CCO
DME_Z = [6, 8, 6, 1, 1, 1, 1, 1, 1]  # COC, an isomer of ethanol: same formula C2H6O
WATER_Z = [8, 1, 1]


def _conformer(rng, mid, cid, species, *, labelled=True, props=None, status=None):
    n = len(species)
    return Conformer(
        mid,
        cid,
        species,
        rng.normal(size=(n, 3)),
        energy=float(rng.normal() - 100.0) if labelled else float("nan"),
        forces=rng.normal(size=(n, 3)) if labelled else None,
        status=status or ("ok" if labelled else "unlabelled"),
        props=props or {},
    )


def mixed_dataset() -> Dataset:
    """Interleaved formulas, two isomers sharing C2H6O, unlabelled rows, props on some rows only."""
    rng = np.random.default_rng(0)
    molecules = {
        0: Molecule(0, "CCO", "ethanol", 0, 1, "train"),
        3: Molecule(3, "O", "water", 0, 1, "test"),
        7: Molecule(7, "COC", "dimethyl ether", 1, 2, "train"),
    }
    conformers = [
        _conformer(
            rng,
            0,
            0,
            ETHANOL_Z,
            props={"step": 3, "mmff_energy": 1.5, "charges": rng.normal(size=9), "end": "step_limit"},
        ),  # fmt: skip
        _conformer(rng, 3, 0, WATER_Z, labelled=False),
        _conformer(rng, 7, 0, DME_Z, props={"step": 0, "nnp_forces": rng.normal(size=(9, 3)), "end": "converged"}),
        _conformer(rng, 0, 1, ETHANOL_Z, status="scf_not_converged", labelled=False),
        _conformer(rng, 3, 1, WATER_Z, props={"mmff_energy": 2, "charges": np.array([-0.8, 0.4, 0.4])}),
        _conformer(rng, 7, 1, DME_Z, labelled=False, props={"repaired": np.int64(1)}),
        _conformer(rng, 0, 2, ETHANOL_Z, status="converged"),
    ]
    attrs = {"kind": "test", "round": 2, "ratio": 0.25, "skipped": [{"name": "x", "reason": "y"}], "note": "hé"}
    return Dataset(molecules, conformers, attrs)


def test_round_trip_keeps_every_field_and_row_order(tmp_path):
    ds = mixed_dataset()
    path = tmp_path / "d.h5"
    data.write(path, ds)
    back = data.read(path)

    assert back.molecules == ds.molecules
    assert back.attrs == {**ds.attrs, "energy_convention": "total"}  # every file records its convention
    assert len(back) == len(ds)
    all_props = {"step", "mmff_energy", "charges", "nnp_forces", "repaired", "end"}
    for a, b in zip(ds.conformers, back.conformers, strict=True):
        assert (b.molecule_id, b.conformer_id, b.status) == (a.molecule_id, a.conformer_id, a.status)
        np.testing.assert_array_equal(b.species, a.species)
        assert b.species.dtype == np.int64
        np.testing.assert_array_equal(b.coordinates, a.coordinates)  # float64, bit for bit
        if np.isnan(a.energy):
            assert np.isnan(b.energy)
        else:
            assert b.energy == a.energy
        if a.forces is None:
            assert b.forces is None
        else:
            np.testing.assert_array_equal(b.forces, a.forces)
        assert set(b.props) == all_props  # every row gets every property (fill values where absent)
        for key, value in a.props.items():
            np.testing.assert_array_equal(b.props[key], value)

    # Types survive: integer scalars come back as int, float scalars as float.
    c0 = back.conformers[0]
    assert type(c0.props["step"]) is int and c0.props["step"] == 3
    assert type(c0.props["mmff_energy"]) is float
    # mmff_energy was an int (2) on one row and a float on another: stored as float
    assert type(back.conformers[4].props["mmff_energy"]) is float and back.conformers[4].props["mmff_energy"] == 2.0
    assert back.conformers[5].props["repaired"] == 1 and type(back.conformers[5].props["repaired"]) is int
    # names come back as str in both formula groups, None where a row lacks one
    assert [c.props["end"] for c in back.conformers] == ["step_limit", None, "converged", None, None, None, None]


def test_missing_props_get_fill_values(tmp_path):
    ds = mixed_dataset()
    data.write(tmp_path / "d.h5", ds)
    back = data.read(tmp_path / "d.h5")
    water_unlabelled = back.conformers[1]  # has no props at all
    assert water_unlabelled.props["step"] == -1  # integer fill
    assert np.isnan(water_unlabelled.props["mmff_energy"])  # float fill
    assert water_unlabelled.props["charges"].shape == (3,) and np.isnan(water_unlabelled.props["charges"]).all()
    assert water_unlabelled.props["nnp_forces"].shape == (3, 3) and np.isnan(water_unlabelled.props["nnp_forces"]).all()
    assert back.conformers[0].props["repaired"] == -1
    assert water_unlabelled.props["end"] is None  # name fill


def test_isomers_share_a_formula_group(tmp_path):
    import h5py

    ds = mixed_dataset()
    data.write(tmp_path / "d.h5", ds)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert sorted(f.keys()) == ["C2H6O", "H2O"]
        assert f["C2H6O"]["species"].shape == (5, 9)  # 3 ethanol + 2 dimethyl ether conformations
        np.testing.assert_array_equal(sorted(f["C2H6O"]["molecule_id"][()]), [0, 0, 0, 7, 7])
        assert all(isinstance(v, h5py.Dataset) for v in f.values() for v in v.values())  # nothing nested
    back = data.read(tmp_path / "d.h5")
    assert [c.molecule_id for c in back] == [0, 3, 7, 0, 3, 7, 0]
    assert [back.smiles(c) for c in back][:3] == ["CCO", "O", "COC"]


def test_empty_dataset_round_trip(tmp_path):
    data.write(tmp_path / "e.h5", Dataset(attrs={"kind": "empty"}))
    back = data.read(tmp_path / "e.h5")
    assert len(back) == 0 and back.molecules == {} and back.attrs == {"kind": "empty", "energy_convention": "total"}


def test_failed_write_leaves_no_file_and_no_temp_file(tmp_path):
    ds = mixed_dataset()
    ds.attrs["bad"] = object()  # not JSON-able: fails inside the HDF5 write, after the groups
    path = tmp_path / "out.h5"
    with pytest.raises(TypeError):
        data.write(path, ds)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_existing_file(tmp_path):
    path = tmp_path / "out.h5"
    good = mixed_dataset()
    data.write(path, good)
    before = path.read_bytes()

    bad = mixed_dataset()
    bad.conformers[2].props["nnp_forces"] = np.zeros((4, 3))  # wrong per-atom shape: fails mid-write
    with pytest.raises((DataError, ValueError)):
        data.write(path, bad)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.h5"]
    assert len(data.read(path)) == len(good)


@pytest.mark.parametrize(
    "props, match",
    [({"energies": 1.0}, "reserved"), ({"label": np.array(["a", "b"])}, "numeric"), ({"end": 1}, "mixes names")],
)
def test_bad_props_are_data_errors(tmp_path, props, match):
    ds = mixed_dataset()
    ds.conformers[0].props.update(props)
    with pytest.raises(DataError, match=match):
        data.write(tmp_path / "x.h5", ds)
    assert os.listdir(tmp_path) == []


def test_reserved_attr_names_cannot_clobber_the_layout(tmp_path):
    ds = mixed_dataset()
    ds.attrs["molecules"] = ["not", "a", "table"]
    with pytest.raises(DataError, match="reserved"):
        data.write(tmp_path / "x.h5", ds)


def _one_line_data_error(path) -> str:
    with pytest.raises(DataError) as info:
        data.read(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_read_missing_file(tmp_path):
    assert "no such file" in _one_line_data_error(tmp_path / "missing.h5")


def test_read_non_hdf5_file(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("species,coordinates\n1,2\n")
    assert "not an HDF5 file" in _one_line_data_error(path)


def test_read_foreign_hdf5_file(tmp_path):
    import h5py

    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["CH4/species"] = np.array([[6, 1, 1, 1, 1]])
        f["CH4/coordinates"] = np.zeros((1, 5, 3))
    assert "not a golf-workflow dataset" in _one_line_data_error(path)


def test_read_damaged_dataset(tmp_path):
    import h5py

    path = tmp_path / "d.h5"
    data.write(path, mixed_dataset())
    with h5py.File(path, "a") as f:
        del f["H2O"]["status"]
    assert "damaged" in _one_line_data_error(path)


def test_unknown_status_is_rejected():
    with pytest.raises(DataError, match="unknown status"):
        Conformer(0, 0, WATER_Z, np.zeros((3, 3)), status="fine")


def test_subset_split_labelled_concat():
    ds = mixed_dataset()
    assert [c.conformer_id for c in ds.split("test")] == [0, 1]
    assert set(ds.split("test").molecules) == {3}
    assert [c.status for c in ds.labelled()] == ["ok", "ok", "ok"]
    assert ds.status_counts() == {"ok": 3, "unlabelled": 2, "scf_not_converged": 1, "converged": 1}
    assert [c.molecule_id for c in ds.subset([6, 0])] == [0, 0]
    both = data.concat([ds.subset([0]), ds.subset([1])])
    assert [c.molecule_id for c in both] == [0, 3] and set(both.molecules) == {0, 3}
    other = Dataset({0: Molecule(0, "C")}, [])
    with pytest.raises(DataError, match="molecule id 0"):
        data.concat([ds, other])


def test_formula():
    assert data.formula(np.array(ETHANOL_Z)) == "C2H6O"
    assert data.formula(np.array(WATER_Z)) == "H2O"
    assert data.formula(np.array([17, 6, 1, 1, 1])) == "CH3Cl"


def test_torchani_reads_our_file_with_equal_keys_in_every_group(tmp_path):
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    from torchani.datasets import ANIDataset

    ds = mixed_dataset()
    path = tmp_path / "d.h5"
    data.write(path, ds)
    ani = ANIDataset(path)
    assert ani.num_conformers == len(ds)
    assert sorted(ani.keys()) == ["C2H6O", "H2O"]
    keys = [set(ani.get(name).keys()) for name in ani.keys()]
    assert keys[0] == keys[1]
    assert {"species", "coordinates", "energies", "forces", "row", "status", "charges", "nnp_forces", "end"} <= keys[0]
    water = ani.get("H2O")
    np.testing.assert_allclose(water["coordinates"].numpy(), np.stack([ds.conformers[i].coordinates for i in (1, 4)]))
    np.testing.assert_array_equal(water["row"].numpy(), [1, 4])


def test_energy_convention_is_recorded_and_mixing_is_an_error(tmp_path):
    ds = mixed_dataset()
    assert data.energy_convention(ds) == "total"  # the default: what the oracle writes
    data.require_total_energies(ds)
    subtracted = Dataset(dict(ds.molecules), list(ds.conformers), {"energy_convention": "atomref_subtracted"})
    with pytest.raises(DataError, match="different energy conventions"):
        data.concat([ds, subtracted])
    with pytest.raises(DataError, match="needs total energies.*atomref_subtracted"):
        data.require_total_energies(subtracted, "training")
    # same convention on both sides: kept on the result
    assert data.concat([subtracted, subtracted]).attrs["energy_convention"] == "atomref_subtracted"
    assert data.concat([ds, ds]).attrs["energy_convention"] == "total"

    data.write(tmp_path / "s.h5", subtracted)
    back = data.read(tmp_path / "s.h5")
    assert back.attrs["energy_convention"] == "atomref_subtracted"
    with pytest.raises(DataError, match="different energy conventions"):
        data.concat([data.read(tmp_path / "s.h5"), ds])

    bad = Dataset(dict(ds.molecules), list(ds.conformers), {"energy_convention": "relative"})
    with pytest.raises(DataError, match="unknown energy_convention 'relative'"):
        data.write(tmp_path / "bad.h5", bad)


def test_legacy_import_with_atomrefs_reads_as_atomref_subtracted(tmp_path):
    """Files written before the convention was recorded: an import with atomrefs kept subtracted energies."""
    import h5py

    ds = mixed_dataset()
    ds.attrs["atomrefs"] = {"energy": [0.0, -0.5]}
    path = tmp_path / "old.h5"
    data.write(path, ds)
    with h5py.File(path, "a") as f:  # what the old writer left: no energy_convention attribute
        del f.attrs["energy_convention"]
    assert data.read(path).attrs["energy_convention"] == "atomref_subtracted"
    with pytest.raises(DataError, match="needs total energies"):
        data.require_total_energies(data.read(path))
    del ds.attrs["atomrefs"]
    data.write(path, ds)
    with h5py.File(path, "a") as f:
        del f.attrs["energy_convention"]
    assert data.read(path).attrs["energy_convention"] == "total"


def test_read_keeps_whole_arrays_until_rows_are_asked_for(tmp_path):
    """len, column, status_counts and writing back use the groups' arrays; conformers appear on demand."""
    ds = mixed_dataset()
    data.write(tmp_path / "a.h5", ds)
    back = data.read(tmp_path / "a.h5")
    assert back._conformers is None  # nothing made per row yet
    assert len(back) == 7
    np.testing.assert_array_equal(back.column("energies"), [c.energy for c in ds])
    assert back.column("status").tolist() == [c.status for c in ds]
    np.testing.assert_array_equal(back.column("molecule_id"), [0, 3, 7, 0, 3, 7, 0])
    np.testing.assert_array_equal(back.column("step"), [3, -1, 0, -1, -1, -1, -1])  # -1: int fill
    assert back.column("end").tolist() == ["step_limit", None, "converged", None, None, None, None]
    assert back.status_counts() == ds.status_counts()
    with pytest.raises(DataError, match="no per-conformation scalar 'charges'"):
        back.column("charges")  # per-atom
    with pytest.raises(DataError, match="no per-conformation scalar 'energy'"):
        back.column("energy")  # unknown: a clear error, not a KeyError
    data.write(tmp_path / "b.h5", back)  # straight from the arrays
    assert back._conformers is None

    again = data.read(tmp_path / "b.h5")
    for a, b in zip(ds, again, strict=True):  # the same rows, in the same order, once asked for
        assert (b.molecule_id, b.conformer_id, b.status) == (a.molecule_id, a.conformer_id, a.status)
        np.testing.assert_array_equal(b.coordinates, a.coordinates)
        assert set(b.props) == {"step", "mmff_energy", "charges", "nnp_forces", "repaired", "end"}
        assert b.props["end"] == a.props.get("end")
    np.testing.assert_array_equal(again.column("energies"), back.column("energies"))  # same from rows
    assert again.column("status").tolist() == back.column("status").tolist()

    # rows changed after reading are what gets written
    again.conformers[0].energy = -1.0
    again.conformers = again.conformers[:2]
    data.write(tmp_path / "c.h5", again)
    third = data.read(tmp_path / "c.h5")
    assert len(third) == 2 and third.column("energies")[0] == -1.0


def test_round_trip_of_10_5_rows_through_whole_arrays(tmp_path):
    """The data layer at 10^5 rows (issue 12): written and read back intact, read without making
    a Python object per row, in seconds."""
    import time

    n, rng = 100_000, np.random.default_rng(0)
    species = [np.array([6, 8, 1, 1]), np.array([6, 6, 1, 1, 1, 1]), np.array([7, 1, 1, 1])]
    coords = [rng.normal(size=(n, len(z), 3)) for z in species]
    molecules = {m: data.Molecule(m, smi) for m, smi in enumerate(["C=O", "C=C", "N"])}
    conformers = [
        data.Conformer(r % 3, r // 3, species[r % 3], coords[r % 3][r], -100.0 - r * 1e-6, status="ok",
                       props={"step": r % 100})
        for r in range(n)
    ]  # fmt: skip
    path = tmp_path / "big.h5"
    t = time.perf_counter()
    data.write(path, data.Dataset(molecules, conformers, {"kind": "scale"}))
    back = data.read(path)
    energies, steps = back.column("energies"), back.column("step")
    elapsed = time.perf_counter() - t
    assert back._conformers is None and len(back) == n  # no per-row objects were made
    np.testing.assert_array_equal(energies, -100.0 - np.arange(n) * 1e-6)
    np.testing.assert_array_equal(steps, np.arange(n) % 100)
    np.testing.assert_array_equal(back.conformers[4].coordinates, coords[1][4])  # on demand, in row order
    assert elapsed < 60, elapsed  # 2.6 s here under load; CI-time bound, not a benchmark (bench/data_scale.py)
