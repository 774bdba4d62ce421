#!/usr/bin/env python3
"""Checks the lock annotations (ABSL_GUARDED_BY, ABSL_EXCLUSIVE_LOCKS_REQUIRED,
...) of every first-party C++ file with clang's -Wthread-safety analysis.

The release build is GCC's, which ignores the annotations; this script
re-parses translation units of that build's compile_commands.json with
`clang++ -fsyntax-only -Wthread-safety -Werror` (no code generation) in
parallel, and fails (exit 1) on any warning, showing it. Other warnings are
the release build's business and are off here. Registered with ctest as
format.thread_safety (tests/CMakeLists.txt).

Which files: by default those that can break an annotation, i.e. whose own
text or a repository header they include names a lock or an annotation
(LOCK_WORDS below); a file that does neither takes no lock and calls no
function that requires one, and the inline code of the headers it includes
is analysed with the files that include them for their locks. --all checks
every first-party file (about three times the cost; tests/README.md).

Usage: scripts/check-thread-safety.py BUILD_DIR [-j N] [--all] [--only REGEX]
"""
import argparse
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time


def clang():
    for name in ("clang++", "clang++-14"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check-thread-safety: clang++ is missing (scripts/install-deps.sh installs clang)")


def syntax_only(entry, compiler):
    """The clang command that analyses entry's file: its include paths,
    definitions and language flags, no output, only -Wthread-safety."""
    args = entry.get("arguments") or shlex.split(entry["command"])
    out = [compiler]
    skip = False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD") or a.startswith("-W") or a.startswith("-fsanitize"):
            continue
        out.append(a)
    # -Wno-everything first: later -W flags turn the one group back on.
    return out + ["-fsyntax-only", "-Wno-everything", "-Wthread-safety", "-Werror"]


# What makes a file worth analysing: abseil's lock types and the annotations.
LOCK_WORDS = re.compile(r"Mutex|CondVar|GUARDED_BY|LOCKS_REQUIRED|LOCK_FUNCTION|LOCKS_EXCLUDED|"
                        r"ACQUIRED_(BEFORE|AFTER)|NO_THREAD_SAFETY_ANALYSIS|Notification")
INCLUDE = re.compile(r'^#include "([^"]+)"', re.M)


def names_locks(path, root):
    """True when `path` or a repository header it includes names a lock."""
    with open(path, errors="replace") as f:
        text = f.read()
    if LOCK_WORDS.search(text):
        return True
    for header in INCLUDE.findall(text):
        full = os.path.join(root, header)
        if os.path.isfile(full):
            with open(full, errors="replace") as f:
                if LOCK_WORDS.search(f.read()):
                    return True
    return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("-j", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--all", action="store_true", help="every first-party file")
    parser.add_argument("--only", default="", help="files matching this regex")
    opts = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = os.path.abspath(opts.build_dir)
    with open(os.path.join(build, "compile_commands.json")) as f:
        entries = json.load(f)
    compiler = clang()
    # First-party files only: under the repository, not generated into a build tree.
    mine = [e for e in entries
            if os.path.abspath(e["file"]).startswith(root + os.sep)
            and not os.path.abspath(e["file"]).startswith(os.path.join(root, "build") + os.sep)
            and not os.path.abspath(e["file"]).startswith(build + os.sep)
            and re.search(opts.only, e["file"])]
    total = len(mine)
    if not opts.all:
        mine = [e for e in mine if names_locks(e["file"], root)]
    if not mine:
        sys.exit(f"check-thread-safety: no first-party files in {build}/compile_commands.json")

    def run(entry):
        proc = subprocess.run(syntax_only(entry, compiler), cwd=entry["directory"],
                              capture_output=True, text=True)
        return entry["file"], proc.returncode, proc.stderr

    start = time.monotonic()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=opts.j) as pool:
        for path, rc, err in pool.map(run, mine):
            if rc != 0:
                failed += 1
                print(f"--- {os.path.relpath(path, root)}\n{err}", end="")
    took = time.monotonic() - start
    if failed:
        print(f"check-thread-safety: {failed} of {len(mine)} files have -Wthread-safety errors "
              f"({took:.0f} s)", file=sys.stderr)
        return 1
    print(f"check-thread-safety: {len(mine)} files (of {total}) pass clang -Wthread-safety "
          f"({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
