"""The static HTML report of synfin runs: a verdict matrix (cases x targets) and a page per case
with every target's ladder diagram side by side, read from results.json (synfin-results/1).

    doc = load("results/results.json")
    write_site(doc, "results/report", results_dir="results")
"""
from .errors import BadInput
from .ladder import svg as ladder_svg
from .load import load, merge, rebase, validate
from .site import write_site

__all__ = ["BadInput", "ladder_svg", "load", "merge", "rebase", "validate", "write_site"]
