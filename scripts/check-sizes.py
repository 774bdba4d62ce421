#!/usr/bin/env python3
"""Checks the size rules of the production C++ sources (issue 11): no file
over --max-file lines, and no function over --max-function lines unless the
line right above its first line is a comment starting with "// Long:" that
says why. Exit 1 listing every violation; 0 otherwise.

Usage: scripts/check-sizes.py [--max-file N] [--max-function N]
                              [--exclude PATH]... DIR...
(DIRs relative to the repository root; tests/ and bench/ are not production
code and are not given). Registered with ctest as format.sizes.

A function is a definition that starts in column 0 and ends at the next "}"
in column 0 (the project's clang-format style); functions defined inside a
class body are indented and are short by convention, so they are not
measured.
"""
import argparse
import pathlib
import re
import sys

# Lines in column 0 that open a scope that is not a function body.
NOT_FUNCTION = re.compile(r"^(namespace|class|struct|enum|union|extern|template\s*<[^>]*>\s*(class|struct))\b")


def functions(lines):
    """Yields (first line number, length, header) of column-0 definitions."""
    start = None
    for i, line in enumerate(lines):
        if start is None:
            if line and not line[0].isspace() and line.rstrip().endswith("{"):
                if NOT_FUNCTION.match(line) or line.startswith(("#", "//", "}")):
                    continue
                if "=" in line.split("(")[0]:  # a variable's initialiser
                    continue
                # The signature may span lines above: find where it begins.
                first = i
                while first > 0 and lines[first - 1].strip() and not lines[first - 1].startswith(
                        ("}", "//", "#")) and not lines[first - 1].rstrip().endswith((";", "{")):
                    first -= 1
                start = first
        elif line.startswith("}"):
            yield start, i - start + 1, lines[start].strip()
            start = None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-file", type=int, default=600)
    parser.add_argument("--max-function", type=int, default=80)
    parser.add_argument("--exclude", action="append", default=[],
                        help="a file (relative to the root) not to check")
    parser.add_argument("dirs", nargs="+")
    args = parser.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent
    problems = []
    checked = 0
    for d in args.dirs:
        for path in sorted((root / d).rglob("*")):
            if path.suffix not in (".cc", ".h", ".inc") or not path.is_file():
                continue
            rel = path.relative_to(root)
            if str(rel) in args.exclude:
                continue
            checked += 1
            lines = path.read_text().split("\n")
            if len(lines) - 1 > args.max_file:
                problems.append(f"{rel}: {len(lines) - 1} lines, over {args.max_file}")
            for first, length, header in functions(lines):
                if length <= args.max_function:
                    continue
                above = lines[first - 1].strip() if first > 0 else ""
                if above.startswith("// Long:"):
                    continue
                problems.append(f"{rel}:{first + 1}: function of {length} lines, over "
                                f"{args.max_function} without a '// Long:' reason: {header}")
    for p in problems:
        print(p)
    if checked == 0:
        print("check-sizes: no sources found under " + " ".join(args.dirs), file=sys.stderr)
        return 1
    if problems:
        print(f"check-sizes: {len(problems)} violations in {checked} files", file=sys.stderr)
        return 1
    print(f"check-sizes: {checked} files within {args.max_file} lines, functions within "
          f"{args.max_function} (or with a reason)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
