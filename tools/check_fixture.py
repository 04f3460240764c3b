"""Check parity fixture folders against the project's own loaders and models.

    python tools/check_fixture.py [DIR ...]

With no DIR, the fixtures the repository carries (tests/fixtures/parity) are checked. Each DIR is a fixture folder (holding fixture.json) or a tree of them. Prints one line per case with the maximum
absolute error and ok/FAIL, checks manifest_full.json where present, and exits non-zero on any failure or unknown kind.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dalle_flow.parity import find_fixture_dirs, run_fixture  # noqa: E402

DEFAULT_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, default=[DEFAULT_FIXTURES])
    args = parser.parse_args(argv)
    failures = 0
    for root in args.dirs:
        folders = find_fixture_dirs(root)
        if not folders:
            print(f"{root}: no fixture.json found  FAIL")
            failures += 1
        for folder in folders:
            print(f"== {folder}")
            try:
                results = run_fixture(folder)
            except Exception as exc:  # report and go on: one broken folder must not hide the others
                traceback.print_exc()
                print(f"{folder}: {type(exc).__name__}: {exc}  FAIL")
                failures += 1
                continue
            if not results:
                print(f"{folder}: no cases ran  FAIL")
                failures += 1
            for result in results:
                print("  " + result.line())
                failures += not result.ok
    print(f"{'FAILED' if failures else 'PASSED'}: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
