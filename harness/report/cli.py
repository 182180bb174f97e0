"""synfin-report RESULTS.json... --out DIR [--baseline OLD.json] [--merged OUT.json] [--models DIR]:
the static HTML report.

Exit 0 and print the path of index.html; exit 4 with one line on stderr for input it cannot use
(a missing, truncated or foreign results.json, an unwritable --out or --merged, a broken model or
model diff in --models), leaving --out and --merged untouched. With --models and no results.json,
the report is of the learned models alone.
"""
import argparse
import json
import os
import sys
import tempfile

from .errors import BadInput
from .load import load, merge, rebase, validate
from .models import read as read_models
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
                        "case and target); none with --models: a report of the learned models alone")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the site into")
    p.add_argument("--baseline", metavar="OLD.json", help="an older results.json: mark what changed since")
    p.add_argument("--merged", metavar="OUT.json",
                   help="also write the merged document there (a results.json of its own, e.g. the next "
                        "run's --baseline); its evidence paths point at the inputs' evidence")
    p.add_argument("--models", metavar="DIR",
                   help="a directory synfin-learn wrote (<target>-<side>.json with their .svg, and diffs "
                        "<a>-vs-<b>.json): adds models.html, the state machines and where they differ; "
                        "without RESULTS.json, the report is of the models alone")
    return p


def _inputs(paths: list[str]) -> tuple[dict, str]:
    """The documents merged, and the directory their evidence paths are now relative to."""
    if not paths:
        raise BadInput("no results.json given (nor --models DIR)")
    docs = [load(p) for p in paths]
    dirs = [os.path.dirname(os.path.abspath(p)) for p in paths]
    root = os.path.commonpath(dirs)
    return merge([rebase(d, here, root) if here != root else d for d, here in zip(docs, dirs)]), root


def _stage_merged(doc: dict, root: str, path: str) -> str:
    """The merged document, validated and written beside `path` under a temporary name (renamed
    into place once the site is written, so a refusal leaves neither behind)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise BadInput(f"{path}: is a directory (--merged names the file to write)")
    here = os.path.dirname(path)
    doc = rebase(doc, root, here) if here != root else doc
    validate(doc, "the merged document")  # the next run reads it as a baseline: it must load
    try:
        os.makedirs(here, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=here)
    except OSError as exc:
        raise BadInput(f"{path}: cannot write there ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, separators=(",", ":")) + "\n")  # compact, as the run writes it
    return tmp


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    staged = None
    try:
        if args.results or not args.models:
            doc, root = _inputs(args.results)
        elif args.baseline or args.merged:
            raise BadInput(f"{'--baseline' if args.baseline else '--merged'} needs a results.json "
                           "(only --models was given)")
        else:
            doc, root = None, None  # the learned models alone
        models = read_models(args.models) if args.models else None
        baseline = load(args.baseline) if args.baseline else None
        if args.merged:
            staged = _stage_merged(doc, root, args.merged)
        write_site(doc, args.out, baseline=baseline, results_dir=root, models=models)
        if staged:
            os.replace(staged, os.path.abspath(args.merged))
            staged = None
    except BadInput as exc:
        print(f"synfin-report: {exc}", file=sys.stderr)
        return BAD_INPUT
    finally:
        if staged:
            os.unlink(staged)
    print(os.path.join(os.path.abspath(args.out), "index.html"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
