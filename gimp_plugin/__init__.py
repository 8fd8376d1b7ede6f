"""The GIMP 3 plug-in (impasto.py), installed into GIMP profiles by install.py; GIMP runs it, nothing imports it."""
