"""Units and conversions.

Inside the package energies are in Hartree, lengths in Angstrom and forces in Hartree/Angstrom.
kcal/mol appears only in reports and in MMFF energies (RDKit's unit).
"""

# CODATA 2014, equal to ase.units.Hartree / (ase.units.kcal / ase.units.mol).
HARTREE_TO_KCALPERMOL = 627.509474
# CODATA 2014 Bohr radius in Angstrom; Psi4 1.3 uses 0.52917721067.
BOHR_TO_ANGSTROM = 0.52917721067
# Hartree in eV (CODATA 2014), for ASE.
HARTREE_TO_EV = 27.21138602
