"""Copying a record's evidence into the site, so that the site stands alone."""
import os
import shutil

from .words import target_dir

# record["evidence"] key -> what the link says
FILES = (("pcap", "capture (pcap)"), ("ladder", "ladder.txt"), ("agent_log", "agent log"),
         ("packetdrill", "packetdrill script"))


def copy(record: dict, results_dir: str | None, site_dir: str, slug: str) -> list[dict]:
    """Copy the record's evidence files into site_dir/evidence/<target>/<slug>/; one entry per file:
    {label, name, href (relative to the site's root) or None, why (when it is not there)}."""
    evidence = record.get("evidence") or {}
    links = []
    for key, label in FILES:
        rel = evidence.get(key)
        if not rel:
            continue
        name = os.path.basename(rel)
        if results_dir is None:
            links.append({"label": label, "name": name, "href": None, "why": f"not copied: {rel}"})
            continue
        src = os.path.join(results_dir, rel)
        if not os.path.isfile(src):
            links.append({"label": label, "name": name, "href": None, "why": "missing from the results"})
            continue
        href = "/".join(("evidence", target_dir(record["target"]), slug, name))
        dest = os.path.join(site_dir, *href.split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(src, dest)
        links.append({"label": label, "name": name, "href": href, "why": None})
    return links
