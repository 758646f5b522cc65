#!/usr/bin/python3
"""Extracts the pinned upstream sources (bench/parity/upstream.py's UPSTREAM) into bench/parity/.upstream/.

Usage: /usr/bin/python3 bench/parity/fetch_upstream.py [--git-dir NAME=PATH ...]

For each source it needs a git repository holding the pinned commit. It looks, in order, at
--git-dir NAME=PATH, at $UPSTREAM_MIRRORS/<owner>+<name>/repo (default /work/.mirror, where this
project's machines keep snapshots of public repositories), and otherwise clones
https://github.com/<owner>/<name> (bare, blobs on demand) into bench/parity/.upstream/git/.
Then `git archive <commit> <paths> | tar -x` into bench/parity/.upstream/<name>/ and writes the
commit to <name>/.commit, which the generators check (upstream.check). Nothing here is committed.

transformers: the huggingface/transformers snapshot is too large for this machine's mirror; a fork
whose snapshot carries upstream's main history (NielsRogge/transformers) holds the same commits, so
it is listed as a fallback mirror. The commit hashes are upstream's, so any clone works.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream import ROOT, UPSTREAM, tree  # noqa: E402

FALLBACK_MIRRORS = {"huggingface/transformers": ["NielsRogge/transformers"]}


def git(git_dir, *args, **kw):
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, **kw)


def has_commit(git_dir, commit):
    return subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True).returncode == 0


def find_git_dir(repo, commit, given):
    mirrors = os.environ.get("UPSTREAM_MIRRORS", "/work/.mirror")
    candidates = list(given)
    for r in [repo] + FALLBACK_MIRRORS.get(repo, []):
        base = os.path.join(mirrors, r.replace("/", "+"), "repo")
        candidates += [base, os.path.join(base, ".git")]
    for c in candidates:
        if os.path.isdir(c) and has_commit(c, commit):
            return c
    clone = os.path.join(ROOT, "git", repo.replace("/", "+"))
    if not os.path.isdir(clone):
        os.makedirs(os.path.dirname(clone), exist_ok=True)
        subprocess.run(["git", "clone", "--bare", "--filter=blob:none", f"https://github.com/{repo}", clone], check=True)
    if not has_commit(clone, commit):
        git(clone, "fetch", "origin", commit)
    return clone


def write_dist_info(pypath):
    """Writes <pkg>-<version>.dist-info/METADATA beside each extracted package that states its
    __version__, as an install would, so that importlib.metadata (the version checks of
    transformers and diffusers) finds them."""
    for pkg in sorted(os.listdir(pypath)):
        init = os.path.join(pypath, pkg, "__init__.py")
        if not os.path.isfile(init):
            continue
        m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", open(init).read(), re.M)
        if not m:
            continue
        info = os.path.join(pypath, f"{pkg}-{m.group(1)}.dist-info")
        os.makedirs(info, exist_ok=True)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: {pkg}\nVersion: {m.group(1)}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--git-dir", action="append", default=[], help="NAME=PATH: a git dir holding NAME's commit")
    ap.add_argument("names", nargs="*", help="sources to extract (default: all)")
    args = ap.parse_args()
    given = {}
    for g in args.git_dir:
        k, v = g.split("=", 1)
        given.setdefault(k, []).append(v)
    for name in args.names or UPSTREAM:
        repo, commit, what, paths, _ = UPSTREAM[name]
        dest = tree(name)
        stamp = os.path.join(dest, ".commit")
        if os.path.exists(stamp) and open(stamp).read().strip() == commit:
            print(f"{name}: {repo}@{commit} already extracted")
            continue
        git_dir = find_git_dir(repo, commit, given.get(name, []))
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        archive = subprocess.Popen(["git", f"--git-dir={git_dir}", "archive", commit, *paths], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", dest], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"{name}: git archive failed")
        write_dist_info(os.path.join(dest, UPSTREAM[name][4]))
        with open(stamp, "w") as f:
            f.write(commit + "\n")
        print(f"{name}: extracted {repo}@{commit} ({what}) from {git_dir} -> {os.path.relpath(dest)}")


if __name__ == "__main__":
    main()
