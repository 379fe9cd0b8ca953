"""Weakly supervised localisation: class activation maps and the pseudo-boxes DAP pre-trains on."""
