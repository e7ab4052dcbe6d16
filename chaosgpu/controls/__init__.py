"""Chaos Toolkit controls shipped with chaosgpu (``chaosgpu.controls.objectives``: recovery objectives)."""
