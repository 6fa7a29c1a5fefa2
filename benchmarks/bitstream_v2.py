"""The compact format (v3, written today; v2 before it) against v1.0: bits per
splat at each preset and at equal distortion (Kodak), bytes per image of small
images with and without a dictionary (CIFAR-10 test), decode time (768x512,
10k splats), and what Morton-order neighbour predictors would save.

    nice -n 10 .venv/bin/python benchmarks/fit_cache.py kodak --limit 24
    nice -n 10 .venv/bin/python benchmarks/fit_cache.py cifar --limit 500
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py kodak --limit 24
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py cifar --limit 500
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py speed
    nice -n 10 .venv/bin/python benchmarks/fit_cache.py kodak224 --limit 24
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py dictionary --limit 500
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py estimate --limit 500 [--kodak-limit 24]
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py predictors --limit 4
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py savings --limit 500
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py finished --limit 4 --cifar-limit 100
    .venv/bin/python benchmarks/bitstream_v2.py finished --limit 8 --cifar-limit 0 --search 3x8
    .venv/bin/python benchmarks/bitstream_v2.py finished --limit 24 --skip 8 --cifar-limit 0 \
        --search 3x8 --merge benchmarks/out/bitstream_v2-finished-3x8-part1.json
    .venv/bin/python benchmarks/bitstream_v2.py fixed --limit 24 --cifar-limit 100
    .venv/bin/python benchmarks/bitstream_v2.py allocate --limit 24 [--negligible 0.015625]
    nice -n 10 .venv/bin/python benchmarks/bitstream_v2.py zstd --limit 4 --cifar-limit 20

The script measures whatever `gscodec.format.dumps` writes by default ("new"
below: v3 today; the same command on an older checkout measures its version).
kodak: for each cached fit (3000 splats, 300 iterations) and preset, the v1.0
file, the new file of the same preset, and the new file whose per-field
precision `gscodec.quantize.allocate` picks for the v1.0 preset's distortion
(PSNR of its render against the unquantized render); bits per splat (whole
file) and PSNR against the original image. cifar: q7 bytes per image at 16 /
32 / 64 splats, v1.0, new, new with a dictionary trained on every fifth
image's new file (those images are left out of all averages), the new file's
header and CRC alone, and the new file at q7's distortion (`allocate` at the
PSNR of the q7 file's render against the unquantized render).
speed: parse + render of one 768x512 file with 10k splats, v1.0 vs v2,
median of 7 runs each, interleaved.
dictionary: what `encode-dataset --dictionary` saves, at q7 and fp16 (its
default): CIFAR-10 test at 16 and 64 splats, one dictionary trained as the
pipeline trains it (the files of the first `DICTIONARY_SAMPLE` images) and
measured on the other images; Kodak-224 at 400 splats (24 images, too few to
set a sample aside), each image measured with a dictionary trained on the
other 23.
estimate: measured payload bits per splat (file less header and CRC) over
`gscodec.quantize.estimate_bits_per_splat`, per set and preset (CIFAR-10 at
16 / 32 / 64, Kodak-224 at 400, Kodak at 3000 splats).
predictors: order-0 entropy (bits per splat) of each quantized field's q7 grid
indices (colours after the cross-channel predictors) with no prediction and
with exact integer predictions from the splats before it in Morton order: the
previous one, the floor of the mean of the last 2, 4 or 8, the median of the
last 3; and the saving of the best choice per field and file (Kodak, 3000
splats; CIFAR-10 test at 64).
savings: per CIFAR-10 q7 file, the bytes each version-3 change saves against
storing the same quantizer output as v2.0 did (5-byte start, position offsets
left out, l22's offset relative to l11's, Elias-Fano positions in raw payloads).
finished: the bits at the v1.0 q7 file's PSNR (against the image) when the
encoder's quantized finish is counted (Kodak, 3000 splats, and CIFAR-10 test
at 16): `allocate` as in kodak, the q7 preset after `quantized_finish` (with
``--search`` rounds and sweeps), and the smallest finished file meeting that
PSNR (allocate's target scanned down until three targets in a row miss it).
``--skip`` leaves out the first Kodak images and ``--merge`` adds an earlier
part's rows (its JSON, copied aside) to the table: a long run in two parts.
fixed: fixed-count files (Kodak at 3000 splats, CIFAR-10 test at 16 / 32 /
64): the v1.0 q7 file, the q7 preset finished, and what `gscodec.encode`
writes with no precision given (`ratecontrol.fixed_count_file`: its grids,
finished), bytes and PSNR against the image, and that step's time.
allocate: renders and seconds of `precision_for` (one `allocate`) per Kodak
fit, and the bits per splat of the spec it picks.
zstd: payload bytes of the writer's zstd frame against one made with zstd's
defaults at the same level (shortest match 3, the writer before
`format.ZSTD_MIN_MATCH`), summed per set and preset (Kodak at 3000 splats,
Kodak-224 at 400, CIFAR-10 test at 64), plus the finished Kodak files of the
last `finished` run.
Prints markdown and writes benchmarks/out/bitstream_v2-<which>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import zstandard
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, kodak_paths  # noqa: E402
from fit_cache import (  # noqa: E402
    CIFAR_SPLATS, KODAK224_SPLATS, KODAK_SPLATS, OUT, cifar_fits, cifar_paths, kodak224_fits,
    kodak_fits,
)

import gscodec  # noqa: E402
from gscodec import format as fmt  # noqa: E402
from gscodec import quantize as q  # noqa: E402
from gscodec.datasets.pipeline import DICTIONARY_SAMPLE  # noqa: E402
from gscodec.metrics import psnr  # noqa: E402
from gscodec.splats import FIELDS  # noqa: E402

PRESETS = ("q6", "q7", "q8", "q10")
V1 = fmt.VERSION_1
NEW = f"v{fmt.VERSION[0]}.{fmt.VERSION[1]}"


def kodak(limit: int) -> dict:
    originals = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in kodak_paths(limit)}
    rows = []
    for name, splats in kodak_fits(limit):
        n = len(splats)
        unquantized = gscodec.render(splats)
        row = {"image": name, "psnr_fp32": psnr(unquantized, originals[name])}
        for preset in PRESETS:
            for label, precision, version in (("v1", preset, V1), ("new", preset, fmt.VERSION)):
                data = fmt.dumps(splats, precision=precision, version=version)
                out = gscodec.render(fmt.loads(data))
                row[f"{preset}_{label}"] = (len(data) * 8 / n, psnr(out, originals[name]),
                                            psnr(out, unquantized))
            spec = q.allocate(splats, row[f"{preset}_v1"][2])
            data = fmt.dumps(splats, precision=spec)
            out = gscodec.render(fmt.loads(data))
            row[f"{preset}_alloc"] = (len(data) * 8 / n, psnr(out, originals[name]),
                                      psnr(out, unquantized), spec)
        rows.append(row)
        print(name, {k: v if isinstance(v, str) else np.round(v[:3], 2).tolist()
                     for k, v in row.items() if k.startswith("q7")}, flush=True)
    return {"rows": rows}


def kodak_table(result: dict) -> str:
    rows = result["rows"]
    lines = [f"Kodak, {len(rows)} images, 3000 splats, 300 iterations; mean bits per splat "
             "(whole file) and mean PSNR (dB, against the original image):", "",
             f"| preset | v1.0 bits/splat | v1.0 PSNR | {NEW} preset bits/splat | {NEW} preset PSNR | "
             f"{NEW} at v1.0's distortion: bits/splat | PSNR | saving |",
             "|---|---|---|---|---|---|---|---|"]
    for preset in PRESETS:
        m = {k: np.mean([r[f"{preset}_{k}"][0] for r in rows]) for k in ("v1", "new", "alloc")}
        p = {k: np.mean([r[f"{preset}_{k}"][1] for r in rows]) for k in ("v1", "new", "alloc")}
        lines.append(f"| `{preset}` | {m['v1']:.1f} | {p['v1']:.2f} | {m['new']:.1f} | "
                     f"{p['new']:.2f} | {m['alloc']:.1f} | {p['alloc']:.2f} | "
                     f"{100 * (1 - m['alloc'] / m['v1']):.0f}% |")
    return "\n".join(lines)


def cifar(limit: int) -> dict:
    result = {}
    for n in CIFAR_SPLATS:
        fits = cifar_fits(limit, n)
        train = [fmt.dumps(s, precision="q7") for s in fits[::5]]
        test = [s for i, s in enumerate(fits) if i % 5]
        dictionary = fmt.train_dictionary(train)
        files = [fmt.dumps(s, precision="q7") for s in test]
        sizes = {
            "v1": [len(fmt.dumps(s, precision="q7", version=V1)) for s in test],
            "new": [len(f) for f in files],
            "new_dictionary": [len(fmt.dumps(s, precision="q7", dictionary=dictionary))
                               for s in test],
            "new_header": [fmt.read_header(io.BytesIO(f)).data_offset + 4 for f in files],
            "new_at_q7_distortion": [len(fmt.dumps(s, precision=_allocate_at(s, "q7")))
                                     for s in test],
        }
        result[n] = {k: float(np.mean(v)) for k, v in sizes.items()}
        result[n]["test_images"] = len(test)
        result[n]["dictionary_bytes"] = len(dictionary.as_bytes())
        print(n, result[n], flush=True)
    return result


def _allocate_at(splats: gscodec.Splats, preset: str) -> str:
    """The `allocate` spec at the distortion of ``preset``'s file (PSNR of its
    render against the unquantized render)."""
    unquantized = gscodec.render(splats)
    return q.allocate(splats, psnr(gscodec.render(q.roundtrip(splats, preset)), unquantized))


def cifar_table(result: dict) -> str:
    lines = [f"CIFAR-10 test, q7, mean bytes per image (whole file); the dictionary (q7, "
             f"trained on every fifth image, those left out); {NEW}'s header and CRC alone; "
             f"{NEW} at q7's distortion (`allocate`):", "",
             f"| splats | images | v1.0 | {NEW} | {NEW} + dictionary | {NEW} header + CRC | "
             f"{NEW} at q7's distortion | dictionary size |",
             "|---|---|---|---|---|---|---|---|"]
    for n, r in result.items():
        lines.append(f"| {n} | {r['test_images']} | {r['v1']:.1f} | {r['new']:.1f} | "
                     f"{r['new_dictionary']:.1f} | {r['new_header']:.1f} | "
                     f"{r['new_at_q7_distortion']:.1f} | {r['dictionary_bytes']} |")
    return "\n".join(lines)


def savings(limit: int) -> dict:
    """Bytes each v3 change saves on CIFAR-10 q7 files against storing that
    part as v2.0 did, from the same quantizer output."""
    result = {}
    for n in CIFAR_SPLATS:
        rows = []
        for s in cifar_fits(limit, n):
            data = fmt.dumps(s, precision="q7")
            h = fmt.read_header(io.BytesIO(data))
            g = h.grids
            cols = q.quantize(s, "q7")
            index = [np.asarray(v) for v in q.morton_decode(
                np.cumsum(cols.morton_deltas, dtype=np.uint64), g.widths[0], g.widths[1])]
            zz = lambda o: len(fmt._varint(2 * o if o >= 0 else -2 * o - 1))  # noqa: E731
            position = 0 if h.flags & 16 else sum(zz(int(v.min())) for v in index)
            w = g.widths[0] + g.widths[1]
            v2_raw = (n * (w + sum(g.widths[2:])) + 7) // 8
            rows.append({"file": len(data), "header": h.data_offset + 4,
                         "start": 5, "position_offsets": position,
                         "l22_relative": zz(g.offsets[4]) - zz(g.offsets[4] - g.offsets[2]),
                         "elias_fano": 0 if h.zstd else v2_raw - h.raw_size,
                         "position_bits": 8 * h.raw_size / n - sum(g.widths[2:]),
                         **{f"{f}_bits": b for f, b in zip(FIELDS[2:], g.widths[2:])}})
        result[n] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        result[n]["files"] = len(rows)
        print(n, result[n], flush=True)
    return result


def savings_table(result: dict) -> str:
    lines = ["CIFAR-10 test, q7, mean bytes per file: the v3.0 file, its header + CRC, and "
             "what each change saves against v2.0's way:", "",
             "| splats | files | v3.0 file | header + CRC | 5-byte start | position offsets "
             "omitted | `l22` offset relative | Elias-Fano positions |",
             "|---|---|---|---|---|---|---|---|"]
    for n, r in result.items():
        lines.append(f"| {n} | {r['files']} | {r['file']:.1f} | {r['header']:.1f} | "
                     f"{r['start']:.1f} | {r['position_offsets']:.2f} | "
                     f"{r['l22_relative']:.2f} | {r['elias_fano']:.2f} |")
    lines += ["", "Bits per splat of the raw payload: positions (Elias-Fano) and each code's width:",
              "", "| splats | positions | " + " | ".join(FIELDS[2:]) + " |",
              "|---" * 8 + "|"]
    for n, r in result.items():
        lines.append(f"| {n} | {r['position_bits']:.2f} | "
                     + " | ".join(f"{r[f + '_bits']:.2f}" for f in FIELDS[2:]) + " |")
    return "\n".join(lines)


def _order0_bits(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def _neighbour_predictions(v: np.ndarray) -> dict[str, np.ndarray]:
    """Exact integer predictions of each value from the ones before it (0
    where there are too few)."""
    n = len(v)

    def lag(k: int) -> np.ndarray:
        out = np.zeros(n, np.int64)
        out[k:] = v[:n - k] if k < n else []
        return out

    return {
        "none": np.zeros(n, np.int64),
        "previous": lag(1),
        "mean of 2": (lag(1) + lag(2)) >> 1,
        "median of 3": np.median(np.stack([lag(1), lag(2), lag(3)]), axis=0).astype(np.int64),
        "mean of 4": sum(lag(k) for k in range(1, 5)) >> 2,
        "mean of 8": sum(lag(k) for k in range(1, 9)) >> 3,
    }


def predictors(limit: int) -> dict:
    sets = {"Kodak, 3000 splats": [s for _, s in kodak_fits(limit)],
            "CIFAR-10 test, 64 splats": cifar_fits(500, 64)}
    result = {}
    for name, fits in sets.items():
        bits: dict[str, dict[str, list[float]]] = {}
        for s in fits:
            cols = q.quantize(s, "q7")
            for i, codes in enumerate(cols.codes):
                stored = codes.astype(np.int64) + cols.grids.offsets[i + 2]
                per = bits.setdefault(FIELDS[i + 2], {})
                for label, prediction in _neighbour_predictions(stored).items():
                    per.setdefault(label, []).append(_order0_bits(stored - prediction) / len(s))
        result[name] = {"files": len(fits), "fields": {}}
        for f, per in bits.items():
            table = {label: float(np.mean(v)) for label, v in per.items()}
            best = np.min(np.array(list(per.values())), axis=0)
            table["best per file, saving"] = float(np.mean(np.array(per["none"]) - best))
            result[name]["fields"][f] = table
        print(name, result[name], flush=True)
    return result


def predictors_table(result: dict) -> str:
    lines = []
    for name, r in result.items():
        labels = list(next(iter(r["fields"].values())))
        lines += [f"{name} ({r['files']} files), q7: order-0 entropy, bits per splat per field:",
                  "", "| field | " + " | ".join(labels) + " |",
                  "|---" * (len(labels) + 1) + "|"]
        for f, table in r["fields"].items():
            lines.append(f"| `{f}` | " + " | ".join(f"{table[k]:.2f}" for k in labels) + " |")
        lines.append("")
    return "\n".join(lines)


def dictionary_savings(limit: int) -> dict:
    sets = {f"CIFAR-10 test, {n} splats": cifar_fits(limit, n) for n in (16, 64)}
    sets[f"Kodak-224, {KODAK224_SPLATS} splats"] = kodak224_fits(24)
    result = {}
    for name, fits in sets.items():
        for precision in ("q7", "fp16"):
            files = [fmt.dumps(s, precision=precision) for s in fits]
            if len(fits) > DICTIONARY_SAMPLE:
                dictionary = fmt.train_dictionary(files[:DICTIONARY_SAMPLE])
                test = range(DICTIONARY_SAMPLE, len(fits))
                with_dict = [len(fmt.dumps(fits[i], precision=precision, dictionary=dictionary))
                             for i in test]
                dict_bytes = len(dictionary.as_bytes())
            else:  # leave one out
                test = range(len(fits))
                with_dict, sizes = [], []
                for i in test:
                    dictionary = fmt.train_dictionary(files[:i] + files[i + 1:])
                    with_dict.append(len(fmt.dumps(fits[i], precision=precision,
                                                   dictionary=dictionary)))
                    sizes.append(len(dictionary.as_bytes()))
                dict_bytes = int(np.mean(sizes))
            without = float(np.mean([len(files[i]) for i in test]))
            row = {"images": len(test), "without": without, "with": float(np.mean(with_dict)),
                   "dictionary_bytes": dict_bytes}
            result[f"{name}, {precision}"] = row
            print(name, precision, row, flush=True)
    return result


def dictionary_table(result: dict) -> str:
    lines = ["Mean bytes per file, without and with a data-set dictionary:", "",
             "| set, precision | images measured | without | with dictionary | saving | "
             "dictionary size |", "|---|---|---|---|---|---|"]
    for name, r in result.items():
        lines.append(f"| {name} | {r['images']} | {r['without']:.1f} | {r['with']:.1f} | "
                     f"{100 * (1 - r['with'] / r['without']):.1f}% | {r['dictionary_bytes']} B |")
    return "\n".join(lines)


def estimate(limit: int, kodak_limit: int) -> dict:
    sets = {f"CIFAR-10 test, {n} splats": cifar_fits(limit, n) for n in CIFAR_SPLATS}
    sets[f"Kodak-224, {KODAK224_SPLATS} splats"] = kodak224_fits(kodak_limit)
    sets["Kodak, 3000 splats"] = [s for _, s in kodak_fits(kodak_limit)]
    result = {}
    for name, fits in sets.items():
        for preset in PRESETS:
            ratios = []
            for s in fits:
                data = fmt.dumps(s, precision=preset)
                payload = len(data) - fmt.read_header(io.BytesIO(data)).data_offset - 4
                ratios.append(8 * payload / len(s)
                              / q.estimate_bits_per_splat(preset, len(s), s.width, s.height))
            result[f"{name}, {preset}"] = {"images": len(fits), "mean": float(np.mean(ratios)),
                                           "min": float(np.min(ratios)),
                                           "max": float(np.max(ratios))}
            print(name, preset, result[f"{name}, {preset}"], flush=True)
    return result


def estimate_table(result: dict) -> str:
    lines = ["Measured payload bits per splat over the estimate:", "",
             "| set, preset | images | mean | min | max |", "|---|---|---|---|---|"]
    for name, r in result.items():
        lines.append(f"| {name} | {r['images']} | {r['mean']:.3f} | {r['min']:.3f} | "
                     f"{r['max']:.3f} |")
    return "\n".join(lines)


def speed() -> dict:
    cache = OUT / "kodak-kodim01-10000-speed.npz"
    if cache.exists():
        z = np.load(cache)
        splats = gscodec.Splats.from_array(z["splats"], int(z["width"]), int(z["height"]))
    else:
        image = np.asarray(Image.open(kodak_paths(1)[0]).convert("RGB"))
        splats = gscodec.fit(image, 10000, iterations=100)
        np.savez(cache, splats=splats.to_array(), width=splats.width, height=splats.height)
    files = {"v1": fmt.dumps(splats, precision="q7", version=V1),
             "new": fmt.dumps(splats, precision="q7")}
    times: dict[str, list[float]] = {k: [] for k in files}
    for _ in range(8):
        for k, data in files.items():
            t0 = time.perf_counter()
            with gscodec.open(data) as im:
                im.render()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    parse = {}
    for k, data in files.items():
        t0 = time.perf_counter()
        for _ in range(10):
            fmt.loads(data)
        parse[k] = (time.perf_counter() - t0) / 10
    result = {"decode_s": med, "parse_s": parse, "ratio": med["new"] / med["v1"],
              "bytes": {k: len(v) for k, v in files.items()}}
    print(result)
    return result


def _finish_at(splats: gscodec.Splats, image: np.ndarray, goal: float, ceiling: float,
               search: tuple[int, int], step: float = 0.5, span: float = 12.0,
               misses: int = 3) -> tuple[int, float, str]:
    """The smallest finished file found whose PSNR against ``image`` is at
    least ``goal``: `allocate` at targets (PSNR against the unquantized
    render) from ``ceiling`` down by ``step`` over ``span`` dB, each spec's
    splats finished (`quantized_finish` with ``search`` = (rounds, sweeps))
    for ``image``, until ``misses`` targets in a row after the last pass
    miss the goal. (A scan, not a bisection: how much the finish recovers
    varies with the spec, so the finished PSNR is not monotone in the
    target.) Returns (bytes, PSNR, spec); the file at ``ceiling`` when none
    meets the goal."""
    rounds, sweeps = search

    def trial(target: float) -> tuple[int, float, str]:
        spec = q.allocate(splats, target)
        finished = gscodec.ratecontrol.quantized_finish(splats, image, spec, rounds=rounds,
                                                        sweeps=sweeps)
        data = fmt.dumps(finished, precision=spec)
        return len(data), psnr(gscodec.render(fmt.loads(data)), image), spec

    found, missed = [], 0
    for k in range(int(span / step) + 1):
        found.append(trial(ceiling - step * k))
        passed = found[-1][1] >= goal
        missed = 0 if passed else missed + 1
        if missed >= misses and any(f[1] >= goal for f in found):
            break
    passing = [f for f in found if f[1] >= goal]
    return min(passing) if passing else found[0]


def finished(limit: int, cifar_limit: int, search: tuple[int, int], skip: int = 0) -> dict:
    """Bits at the v1.0 q7 file's PSNR (against the image) when the encoder's
    quantized finish is counted: `allocate` as in ``kodak``, the q7 preset
    finished, and the smallest finished file at that PSNR (`_finish_at`).
    The first ``skip`` Kodak images are left out (a long run in parts)."""
    sets = [(name, splats, np.asarray(Image.open(path).convert("RGB")))
            for (name, splats), path in zip(kodak_fits(limit), kodak_paths(limit))][skip:]
    sets += [(f"cifar-{path.parent.name}{path.stem}", splats,
              np.asarray(Image.open(path).convert("RGB")))
             for splats, path in zip(cifar_fits(cifar_limit, CIFAR_SPLATS[0]),
                                     cifar_paths(cifar_limit))]
    rows = []
    for name, splats, image in sets:
        unquantized = gscodec.render(splats)
        v1 = gscodec.render(fmt.loads(fmt.dumps(splats, precision="q7", version=V1)))
        goal, ceiling = psnr(v1, image), psnr(v1, unquantized)
        plain = fmt.dumps(splats, precision=q.allocate(splats, ceiling))
        q7 = fmt.dumps(gscodec.ratecontrol.quantized_finish(
            splats, image, "q7", rounds=search[0], sweeps=search[1]), precision="q7")
        size, quality, spec = _finish_at(splats, image, goal, ceiling, search)
        row = {"image": name, "splats": len(splats), "goal_psnr": goal,
               "v1_q7": len(fmt.dumps(splats, precision="q7", version=V1)),
               "allocate": (len(plain), psnr(gscodec.render(fmt.loads(plain)), image)),
               "q7_finished": (len(q7), psnr(gscodec.render(fmt.loads(q7)), image)),
               "finish_at_goal": (size, quality, spec)}
        rows.append(row)
        if not name.startswith("cifar"):
            print(name, {k: v for k, v in row.items() if k != "image"}, flush=True)
    return {"rows": rows, "search": list(search), "skip": skip}


def finished_table(result: dict) -> str:
    search = "x".join(str(v) for v in result.get("search", (1, 2)))
    lines = [f"Finish search {search} (rounds x sweeps). Mean over each set; bits per splat "
             "(whole file) for Kodak, bytes per file for CIFAR-10; PSNR against the image. "
             "The goal is the v1.0 q7 file's PSNR:", "",
             "| set | images | goal PSNR | v1.0 q7 | `allocate` at v1.0 q7's distortion | PSNR | "
             "q7 finished | PSNR | smallest finished file at the goal | PSNR |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, rows in (("Kodak, 3000 splats", [r for r in result["rows"]
                                                 if not r["image"].startswith("cifar")]),
                        ("CIFAR-10, 16 splats", [r for r in result["rows"]
                                                  if r["image"].startswith("cifar")])):
        if not rows:
            continue
        unit = (lambda b, r: 8 * b / r["splats"]) if label.startswith("Kodak") else (lambda b, r: b)

        def mean(key, i=None):
            return np.mean([unit(r[key] if i is None else r[key][i], r) for r in rows])

        def quality(key):
            return np.mean([r[key][1] for r in rows])
        lines.append(f"| {label} | {len(rows)} | {np.mean([r['goal_psnr'] for r in rows]):.2f} | "
                     f"{mean('v1_q7'):.1f} | {mean('allocate', 0):.1f} | {quality('allocate'):.2f} | "
                     f"{mean('q7_finished', 0):.1f} | {quality('q7_finished'):.2f} | "
                     f"{mean('finish_at_goal', 0):.1f} | {quality('finish_at_goal'):.2f} |")
    return "\n".join(lines)


def fixed_count(limit: int, cifar_limit: int) -> dict:
    """Fixed-count files three ways, each against the image: the v1.0 q7
    file (plain rounding), the q7 preset finished (`quantized_finish`), and
    what `gscodec.encode` writes with no precision given
    (`ratecontrol.fixed_count_file`: its grids, finished), with the seconds
    that takes."""
    sets = [(f"kodak-{KODAK_SPLATS}", splats, np.asarray(Image.open(path).convert("RGB")))
            for (_, splats), path in zip(kodak_fits(limit), kodak_paths(limit))]
    for n in CIFAR_SPLATS:
        sets += [(f"cifar-{n}", splats, np.asarray(Image.open(path).convert("RGB")))
                 for splats, path in zip(cifar_fits(cifar_limit, n), cifar_paths(cifar_limit))]
    rows = []
    for name, splats, image in sets:
        def measured(data: bytes) -> tuple[int, float]:
            return len(data), psnr(gscodec.render(fmt.loads(data)), image)

        v1 = measured(fmt.dumps(splats, precision="q7", version=V1))
        preset = measured(fmt.dumps(gscodec.ratecontrol.quantized_finish(splats, image, "q7"),
                                    precision="q7"))
        t0 = time.perf_counter()
        finished, spec = gscodec.ratecontrol.fixed_count_file(splats, image)
        seconds = time.perf_counter() - t0
        rows.append({"set": name, "splats": len(splats), "v1_q7": v1, "q7_finished": preset,
                     "default": measured(fmt.dumps(finished, precision=spec)) + (spec,),
                     "seconds": seconds})
    return {"rows": rows}


def fixed_count_table(result: dict) -> str:
    lines = ["Mean over each set; bytes per file, PSNR against the image:", "",
             "| set | images | v1.0 q7 | PSNR | q7 finished | PSNR | default, finished | "
             "PSNR | vs q7 finished | its time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["set"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["set"] == name]

        def mean(key, i):
            return np.mean([r[key][i] for r in rows])
        saved = np.mean([r["default"][0] / r["q7_finished"][0] - 1 for r in rows])
        lines.append(f"| {name} | {len(rows)} | {mean('v1_q7', 0):.1f} | {mean('v1_q7', 1):.2f} | "
                     f"{mean('q7_finished', 0):.1f} | {mean('q7_finished', 1):.2f} | "
                     f"{mean('default', 0):.1f} | {mean('default', 1):.2f} | "
                     f"{100 * saved:+.1f}% | {1e3 * np.mean([r['seconds'] for r in rows]):.0f} ms |")
    return "\n".join(lines)


def allocate_renders(limit: int, negligible: float | None) -> dict:
    """Renders and seconds of one `ratecontrol.precision_for` (q7's quality,
    an `allocate` call) per Kodak fit, and the bits per splat of its spec;
    with ``negligible``, `quantize._NEGLIGIBLE` patched to it (to compare
    the scan's stopping point)."""
    if negligible is not None:
        q._NEGLIGIBLE = negligible
    calls = [0]
    render = gscodec.engine.render

    def counted(*args, **kwargs):
        calls[0] += 1
        return render(*args, **kwargs)

    gscodec.engine.render = counted
    rows = []
    for (name, splats), path in zip(kodak_fits(limit), kodak_paths(limit)):
        image = np.asarray(Image.open(path).convert("RGB"))
        calls[0] = 0
        t0 = time.perf_counter()
        spec = gscodec.ratecontrol.precision_for(splats, image)
        seconds = time.perf_counter() - t0
        rows.append({"image": name, "renders": calls[0], "seconds": seconds, "spec": spec,
                     "bits_per_splat": 8 * len(fmt.dumps(splats, precision=spec)) / len(splats)})
    gscodec.engine.render = render
    return {"negligible": q._NEGLIGIBLE, "rows": rows}


def allocate_table(result: dict) -> str:
    rows = result["rows"]
    return (f"`_NEGLIGIBLE` = {result['negligible']:.4g}, {len(rows)} Kodak fits (3000 splats): "
            f"{np.mean([r['renders'] for r in rows]):.1f} renders per `precision_for` "
            f"(min {min(r['renders'] for r in rows)}, max {max(r['renders'] for r in rows)}), "
            f"{np.mean([r['seconds'] for r in rows]):.2f} s, "
            f"{np.mean([r['bits_per_splat'] for r in rows]):.3f} bits per splat at its spec")


def _defaults_frame(planes: list[bytes]) -> bytes:
    """The writer's frame before `format.ZSTD_MIN_MATCH`: zstd's defaults at
    the writer's level (a block per plane; one block tried below 64 KiB)."""
    zc = zstandard.ZstdCompressor(level=fmt.ZSTD_LEVEL, write_content_size=True,
                                  write_checksum=False, write_dict_id=False)
    zobj = zc.compressobj(size=sum(map(len, planes)))
    frame = b"".join(zobj.compress(p) + zobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                     for p in planes) + zobj.flush()
    if sum(map(len, planes)) <= 1 << 16:
        frame = min(frame, zc.compress(b"".join(planes)), key=len)
    return frame


def _planes(splats: gscodec.Splats, precision: str) -> list[bytes]:
    p = q.parse_precision(precision)
    if p.mode == q.MODE_QUANT:
        return fmt._quantized_layouts(q.quantize(splats, p))[0]
    cols = q.prepare(splats, p)
    return [plane for a, w in zip(cols.arrays, cols.widths) for plane in fmt._byte_planes(a, w)]


def zstd_frames(limit: int, cifar_limit: int) -> dict:
    """Payload bytes, zstd's defaults vs the writer, per set and precision."""
    sets = {"Kodak, 3000 splats": [s for _, s in kodak_fits(limit)],
            "Kodak-224, 400 splats": kodak224_fits(limit),
            "CIFAR-10, 64 splats": cifar_fits(cifar_limit, CIFAR_SPLATS[-1])}
    cases = [(name, precision, splats) for name, fits in sets.items()
             for precision in PRESETS + ("fp16", "fp32") for splats in [fits]]
    finished_json = OUT.parent / "bitstream_v2-finished.json"
    if finished_json.exists():  # the smallest finished Kodak files at q7's distortion
        rows = [r for r in json.loads(finished_json.read_text())["rows"]
                if not r["image"].startswith("cifar")][:limit]
        images = [np.asarray(Image.open(p).convert("RGB")) for p in kodak_paths(len(rows))]
        spec_fits = [(r["finish_at_goal"][2], s, im) for r, (_, s), im
                     in zip(rows, kodak_fits(len(rows)), images)]
        cases.append(("Kodak, 3000 splats, finished at q7's distortion", "finished",
                      [(spec, gscodec.ratecontrol.quantized_finish(s, im, spec))
                       for spec, s, im in spec_fits]))
    rows = []
    for name, precision, fits in cases:
        pairs = fits if precision == "finished" else [(precision, s) for s in fits]
        defaults = writer = 0
        for spec, splats in pairs:
            planes = _planes(splats, spec)
            defaults += len(_defaults_frame(planes))
            writer += len(fmt._compress(planes))
        rows.append({"set": name, "precision": precision, "files": len(pairs),
                     "splats": sum(len(s) for _, s in pairs), "defaults": defaults,
                     "writer": writer})
        print(rows[-1], flush=True)
    return {"rows": rows}


def zstd_table(result: dict) -> str:
    lines = ["| set | precision | files | zstd defaults: bits / splat | writer | change |",
             "|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['set']} | {r['precision']} | {r['files']} | "
                     f"{8 * r['defaults'] / r['splats']:.2f} | {8 * r['writer'] / r['splats']:.2f} | "
                     f"{r['writer'] / r['defaults'] - 1:+.1%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=["kodak", "cifar", "speed", "dictionary", "estimate",
                                      "predictors", "savings", "finished", "zstd", "fixed",
                                      "allocate"])
    ap.add_argument("--limit", type=int, default=24,
                    help="images (predictors: Kodak images; CIFAR-10 uses 500)")
    ap.add_argument("--kodak-limit", type=int, default=24, help="Kodak images for estimate")
    ap.add_argument("--cifar-limit", type=int, default=100, help="CIFAR-10 images (finished, zstd, fixed)")
    ap.add_argument("--negligible", type=float, default=None,
                    help="allocate: patch quantize._NEGLIGIBLE (the scan's stopping point)")
    ap.add_argument("--skip", type=int, default=0,
                    help="finished: leave out the first SKIP Kodak images (a long run in parts)")
    ap.add_argument("--merge", nargs="*", default=[], metavar="JSON",
                    help="finished: earlier parts' JSON (same --search) whose rows join the table")
    ap.add_argument("--search", default="1x2",
                    help="finished: the finish's ROUNDSxSWEEPS (1x2: rate control's; 3x8: "
                         "fit(quantize_for=)'s)")
    args = ap.parse_args()
    command = " ".join(["benchmarks/bitstream_v2.py", *sys.argv[1:]])
    if args.which == "kodak":
        result = kodak(args.limit)
        table = kodak_table(result)
    elif args.which == "estimate":
        result = estimate(args.limit, args.kodak_limit)
        table = estimate_table(result)
    elif args.which == "dictionary":
        result = dictionary_savings(args.limit)
        table = dictionary_table(result)
    elif args.which == "savings":
        result = savings(args.limit)
        table = savings_table(result)
    elif args.which == "predictors":
        result = predictors(args.limit)
        table = predictors_table(result)
    elif args.which == "finished":
        result = finished(args.limit, args.cifar_limit,
                          tuple(int(v) for v in args.search.split("x")), args.skip)
        for part in args.merge:
            earlier = json.loads(Path(part).read_text())
            if earlier["search"] != result["search"]:
                raise SystemExit(f"{part}: search {earlier['search']}, not {result['search']}")
            result["rows"] = earlier["rows"] + result["rows"]
        table = finished_table(result)
    elif args.which == "allocate":
        result = allocate_renders(args.limit, args.negligible)
        table = allocate_table(result)
    elif args.which == "fixed":
        result = fixed_count(args.limit, args.cifar_limit)
        table = fixed_count_table(result)
    elif args.which == "zstd":
        result = zstd_frames(args.limit, args.cifar_limit)
        table = zstd_table(result)
    elif args.which == "cifar":
        result = cifar(args.limit)
        table = cifar_table(result)
    else:
        result = speed()
        table = (f"768x512, 10k splats, q7 (v1.0 {result['bytes']['v1']} bytes, {NEW} "
                 f"{result['bytes']['new']}): parse + render "
                 f"{result['decode_s']['v1'] * 1e3:.1f} ms (v1.0) vs "
                 f"{result['decode_s']['new'] * 1e3:.1f} ms ({NEW}), ratio "
                 f"{result['ratio']:.3f}; parse alone {result['parse_s']['v1'] * 1e3:.1f} vs "
                 f"{result['parse_s']['new'] * 1e3:.1f} ms")
    print(header(command))
    print(table)
    (OUT.parent / f"bitstream_v2-{args.which}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
