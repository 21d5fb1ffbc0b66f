"""Which concept each active unit carries: per-concept normalized MI of a run's active units.

    python studies/unit_mi.py RUN_DIR... -o unit-mi.json [--split test_decorrelated]

For each finished run folder (one with its checkpoint), the run's own split is drawn again
(`toybench.runs.encode_run`: its generator, σ, seed and ``n_test``; `test_decorrelated` by
default) and encoded; the units whose posterior-mean variance exceeds 0.01
(`toybench.metrics.units.active_units`) are kept, and for every concept the normalized mutual
information of each kept unit with it (`toybench.metrics.mig.normalized_mutual_info`, the
matrix MIG is computed from: 20-bin histograms, MI / H(concept)) gives

- ``max_nmi``: the largest NMI of one active unit with the concept, and ``unit``: which one;
- ``sum_nmi``: the NMI summed over the active units;
- ``gap``: ``max_nmi`` minus the second largest, MIG's gap (their mean over the concepts is the
  run's ``mig.active`` on that split).

A concept no active unit carries has a small ``max_nmi`` (the histogram estimator's bias is a
few hundredths with 5,000 images). The JSON (one entry per run, keyed by the run folder's name)
is what `studies/dsprites-pairs-64/README.md` quotes; a table is printed too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Decimal places kept in the JSON (the estimator is not better than 1e-4).
DIGITS = 4


def unit_mi(run_dir: Path, split: str) -> dict:
    """The per-concept figures of one run folder (see the module docstring)."""
    import json

    import numpy as np

    from toybench.metrics._common import top_two_gap
    from toybench.metrics.mig import normalized_mutual_info
    from toybench.metrics.units import active_units
    from toybench.runs import encode_run

    with tempfile.TemporaryDirectory() as tmp:
        path = encode_run(run_dir, Path(tmp) / "codes.npz", split=split)
        with np.load(path, allow_pickle=False) as data:
            codes, factors = data["codes"], data["factors"]
            concepts = [str(c) for c in data["concepts"]]
    units = active_units(codes)
    active = np.flatnonzero(units.active)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    entry = {"model": metrics.get("model"), "generator": metrics.get("generator"),
             "corr": metrics.get("corr"), "seed": metrics.get("seed"),
             "protocol": metrics.get("protocol"), "split": split,
             "n_images": int(len(codes)), "n_units": int(codes.shape[1]),
             "active_units": [int(u) for u in active], "concepts": {}}
    nmi = normalized_mutual_info(codes[:, active], factors) if len(active) else None
    gaps = top_two_gap(nmi) if nmi is not None else None  # MIG's gap per concept
    for k, concept in enumerate(concepts):
        if nmi is None:
            entry["concepts"][concept] = {"max_nmi": 0.0, "unit": None, "sum_nmi": 0.0,
                                          "gap": 0.0}
            continue
        best = int(np.argmax(nmi[:, k]))
        entry["concepts"][concept] = {"max_nmi": round(float(nmi[best, k]), DIGITS),
                                      "unit": int(active[best]),
                                      "sum_nmi": round(float(nmi[:, k].sum()), DIGITS),
                                      "gap": round(float(gaps[k]), DIGITS)}
    return entry


def main(argv: list[str] | None = None) -> int:
    from toybench.errors import ToybenchError
    from toybench.io import atomic_write_json, check_output
    from toybench.runs import EVAL_SPLITS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("-o", "--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--split", default="test_decorrelated", choices=EVAL_SPLITS)
    args = parser.parse_args(argv)
    try:
        check_output(args.out)
        result = {run.name: unit_mi(run, args.split) for run in args.runs}
    except ToybenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, result)
    concepts = list(next(iter(result.values()))["concepts"])
    print(f"{'run':<48} {'active':>6}  " + "  ".join(f"{c:>12}" for c in concepts))
    for name, entry in result.items():
        cells = [f"{entry['concepts'][c]['max_nmi']:>12.3f}" for c in concepts]
        print(f"{name[:48]:<48} {len(entry['active_units']):>6}  " + "  ".join(cells))
    print(f"(largest normalized MI of one active unit with each concept, {args.split}); "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
