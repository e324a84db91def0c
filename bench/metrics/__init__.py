"""Scoring: toy metrics (optimal transport, MMD, precision/recall) and image metrics through
torch-fidelity. May import the contracts, nets and data."""
