"""Reporting: leaderboards, plots and the numbers papers reported, built from result files.
May import the contracts and engine.io / engine.results, never the engine's runner."""
