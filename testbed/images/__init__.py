"""Offline container images for the docker runtime: build, cache, list.

``testbed images build [--force]`` calls :func:`images_main`; the docker runtime calls
:func:`image_refs` (which builds what is missing) when it opens.
"""

from __future__ import annotations

import argparse
import sys
import time

from testbed.errors import TestbedError
from testbed.images.build import (
    SOURCE_ENV,
    SOURCES,
    build_images,
    describe,
    image_refs,
    recipes,
    resolve_source,
)


def images_main(argv: list[str] | None = None) -> int:
    """``testbed images {build,list}``: build the images offline (cached) or list them."""
    parser = argparse.ArgumentParser(prog="testbed images",
                                     description="offline images for the docker runtime")
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build the images whose inputs changed")
    build.add_argument("--force", action="store_true", help="rebuild every image")
    listing = sub.add_parser("list", help="show each image and whether it is built")
    for command in (build, listing):
        command.add_argument("--source", choices=SOURCES, default=None,
                             help="official base images (needs a registry) or offline "
                                  f"(Debian, PyPI, Go); default ${SOURCE_ENV} or auto")
    args = parser.parse_args(argv)
    try:
        if args.action == "list":
            print("\n".join(describe(source=args.source)))
            return 0
        from testbed import progress

        started = time.monotonic()
        built = build_images(force=args.force, log=progress.say, source=args.source,
                             step=progress.step)
        print(f"{len(built)} image(s) built in {time.monotonic() - started:.1f} s")
        return 0
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

__all__ = ["build_images", "describe", "image_refs", "images_main", "recipes", "resolve_source"]
