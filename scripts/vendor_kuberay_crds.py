"""Vendor KubeRay's CRD schemas for tests/test_deploy.py: the `v1` openAPIV3Schema of each CRD file given,
as tests/kuberay/<kind>.v1.json.xz (JSON, so that the test reads it in milliseconds; the YAML takes seconds).

    git -C kuberay checkout v1.7.0
    python scripts/vendor_kuberay_crds.py kuberay/ray-operator/config/crd/bases/ray.io_{rayjobs,rayclusters}.yaml
"""

from __future__ import annotations

import json
import lzma
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "tests" / "kuberay"


def main(paths: list[str]) -> None:
    for path in paths:
        crd = yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        kind = crd["spec"]["names"]["kind"]
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        target = OUT / f"{kind}.v1.json.xz"
        target.write_bytes(lzma.compress(json.dumps(v1["schema"]["openAPIV3Schema"], sort_keys=True).encode()))
        print(f"{path} -> {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
