"""synfin-report RESULTS.json... --out DIR [--baseline OLD.json]: the static HTML report.

Exit 0 and print the path of index.html; exit 4 with one line on stderr for input it cannot use
(a missing, truncated or foreign results.json, an unwritable --out), leaving --out untouched.
"""
import argparse
import os
import sys

from .errors import BadInput
from .load import load, merge, rebase
from .site import write_site

BAD_INPUT = 4  # the harness's exit status for unusable input


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and the bad-input status, like every other refusal
        self.exit(BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="synfin-report",
                description="Write the static HTML report of one or more synfin runs.")
    p.add_argument("results", nargs="*", metavar="RESULTS.json",
                   help="results.json files; several are merged (a later one's record wins for the same "
                        "case and target)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the site into")
    p.add_argument("--baseline", metavar="OLD.json", help="an older results.json: mark what changed since")
    return p


def _inputs(paths: list[str]) -> tuple[dict, str]:
    """The documents merged, and the directory their evidence paths are now relative to."""
    if not paths:
        raise BadInput("no results.json given")
    docs = [load(p) for p in paths]
    dirs = [os.path.dirname(os.path.abspath(p)) for p in paths]
    root = os.path.commonpath(dirs)
    return merge([rebase(d, here, root) if here != root else d for d, here in zip(docs, dirs)]), root


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        doc, root = _inputs(args.results)
        baseline = load(args.baseline) if args.baseline else None
        write_site(doc, args.out, baseline=baseline, results_dir=root)
    except BadInput as exc:
        print(f"synfin-report: {exc}", file=sys.stderr)
        return BAD_INPUT
    print(os.path.join(os.path.abspath(args.out), "index.html"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
