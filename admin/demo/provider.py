"""The demo's provider file: examples/provider.yaml with every trunk pointed at the demo carrier on loopback.

    python -m admin.demo.provider examples/provider.yaml --carrier 127.0.0.1:5090 -o run/demo-provider.yaml

examples/provider.yaml stays the documented example (its gateways are documentation addresses no loopback
Kamailio can reach); the demo applies this derived copy, so both stay one source: a change to the example
reaches the demo. Rate deck paths become absolute, since the copy lives elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from admin.demo.carrier import parse_hostport

HEADER = """\
# Written by `python -m admin.demo.provider` from {source}: the same provider, every trunk's gateway
# replaced by the demo carrier on udp:{carrier} (admin/demo/carrier.py). Do not edit; edit the source.
"""


def demo_provider(example: dict, source_dir: Path, carrier: str) -> dict:
    """A copy of the provider spec whose trunks all send to `carrier` over UDP."""
    spec = dict(example)
    trunks = []
    for trunk in example.get("trunks") or []:
        trunk = dict(trunk, gateways=[{"address": carrier, "transport": "udp"}])
        if "rates" in trunk:
            trunk["rates"] = str((source_dir / trunk["rates"]).resolve())
        trunks.append(trunk)
    spec["trunks"] = trunks
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admin.demo.provider", description=__doc__.split("\n\n")[0])
    parser.add_argument("example", type=Path, help="the provider file to derive from (examples/provider.yaml)")
    parser.add_argument("--carrier", type=parse_hostport, default=("127.0.0.1", 5090), metavar="HOST:PORT",
                        help="the demo carrier's UDP address (default 127.0.0.1:5090)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    args = parser.parse_args(argv)
    carrier = f"{args.carrier[0]}:{args.carrier[1]}"
    example = yaml.safe_load(args.example.read_text())
    spec = demo_provider(example, args.example.parent, carrier)
    args.output.write_text(HEADER.format(source=args.example, carrier=carrier)
                           + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
