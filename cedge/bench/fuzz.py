"""``cedge bench fuzz``: coverage-guided fuzzing of the parsers outsiders feed, and hostile-input timings.

Why a benchmark and not only tests: the hypothesis tests (``tests/test_fuzz_*.py``) run a fixed,
reproducible set of examples in seconds; a coverage-guided fuzzer explores for as long as it is
given and reports how far it got. Each target - the wire schema (:func:`decode_uplink` and
:func:`decode_command`), the N42 reader and the NMEA parser - runs for ``--seconds`` under atheris
(libFuzzer for Python) in a process of its own, seeded with valid inputs (envelopes of every kind,
an N42 file written by our writer and the shared RadiaCode-102 file, real NMEA sentences) and a
dictionary of tokens that matter (``NaN``, ``1e400``, ``CountedZeroes``, ...).

Reported per target: executions, executions per second, coverage (libFuzzer's ``cov``: instrumented
edges of our Python code hit) and features (``ft``), corpus growth, peak RSS, and crashes - any
exception other than the parser's documented error, with the exception line and the input that
caused it (base64, first 256 bytes). When atheris is not installed (it is in the ``bench`` extra),
the targets run as *random mutations without coverage guidance* instead, and the result says so
(``"mode": "random-mutation"``).

``hostile_inputs``: how long each row of issue 14 that used to hang or blow up now takes to be
refused (median of 5): the row-9 CountedZeroes bomb, row-11 JSON 1,000 and 100,000 deep, seq 2^63,
a YAML billion-laughs profile.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cedge.bench.fuzz_targets import TARGETS

SHARED_N42 = Path(__file__).resolve().parents[2].parent / "shared" / "spectra" / "radiacode102_am241.n42"
_STATS = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_PROGRESS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_DICTIONARY = {
    "wire": ['"schema"', '"seq"', '"t_utc"', '"body"', '"clock_valid"', "NaN", "Infinity", "-Infinity", "1e400",
             "9223372036854775808", '"9999-12-31T23:59:59Z"', '".."', "true", "null", "[[[[[[[[", '"spectrum"'],
    "n42": ['compressionCode="CountedZeroes"', "<ChannelData>", "</ChannelData>", "PT1S", "<!ENTITY",
            "<!DOCTYPE", "NaN", "INF", "1e400", "<RadMeasurement", "<Spectrum", "energyCalibrationReference"],
    "nmea": ["$GPGGA,", "$GNRMC,", "*", ",N,", ",E,", ",A,", ",M,", "\r\n", "9999", "nan"],
}


# --------------------------------------------------------------------------- seeds
def seed_inputs(target: str) -> list[bytes]:
    """Valid inputs each target starts from (mutating valid input reaches deep code quickly)."""
    if target == "wire":
        from cedge.bench.fuzz_seeds import valid_envelopes

        kinds = ("birth", "death", "health", "measurement", "alarm", "task_event", "vitals")
        return [bytes([kinds.index(kind)]) + payload for kind, payload in valid_envelopes()]
    if target == "n42":
        from cedge.bench.fuzz_seeds import our_n42

        seeds = [our_n42()]
        if SHARED_N42.is_file():
            seeds.append(SHARED_N42.read_bytes())
        return seeds
    if target == "nmea":
        from drivers.nmea_parse import nmea_checksum

        bodies = ["GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,",
                  "GNRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A",
                  "GNGNS,092750.00,5321.6802,N,00630.3372,W,AAN,10,0.9,61.7,55.2,,,V",
                  "GPZDA,092750.00,28,05,2011,00,00"]
        return [f"${b}*{nmea_checksum(b):02X}\r\n".encode() for b in bodies]
    raise ValueError(target)


# --------------------------------------------------------------------------- atheris
def _dict_escape(token: str) -> str:
    """A libFuzzer dictionary entry: printable ASCII as is, everything else (and quote, backslash) as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02X}" for b in token.encode())


def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_atheris(target: str, seconds: float, work: Path) -> dict[str, Any]:
    """One target under atheris for ``seconds`` in its own process; its libFuzzer statistics."""
    corpus = work / f"corpus_{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seed_inputs(target)):
        (corpus / f"seed{i}").write_bytes(seed)
    dict_path = work / f"{target}.dict"
    dict_path.write_text("".join(f'"{_dict_escape(tok)}"\n' for tok in _DICTIONARY[target]))
    crash_dir = work / f"crashes_{target}"
    crash_dir.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "cedge.bench.fuzz_targets", target, f"-max_total_time={int(seconds)}",
           "-print_final_stats=1", f"-dict={dict_path}", "-max_len=16384", "-rss_limit_mb=2048", "-timeout=20",
           f"-artifact_prefix={crash_dir}/", str(corpus)]
    t0 = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300, cwd=work,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    wall = time.monotonic() - t0
    out = run.stderr + run.stdout
    stats = {k: int(v) for k, v in _STATS.findall(out)}
    progress = _PROGRESS.findall(out)
    last = progress[-1] if progress else ("0", "0", "0", "0")
    crashes = []
    for f in sorted(crash_dir.iterdir()):
        data = f.read_bytes()
        crashes.append({"file": f.name, "bytes": len(data), "input_b64": base64.b64encode(data[:256]).decode()})
    exception = re.findall(r"^(\w+(?:Error|Exception)[^\n]*)$", out.split("Uncaught Python exception", 1)[-1], re.M) \
        if "Uncaught Python exception" in out else []
    return {
        "target": target,
        "mode": "atheris",
        "seconds": round(wall, 1),
        "executions": stats.get("number_of_executed_units", int(last[0])),
        "exec_per_s": stats.get("average_exec_per_sec"),
        "coverage_edges": int(last[1]),
        "features": int(last[2]),
        "corpus_units": int(last[3]),
        "new_units": stats.get("new_units_added"),
        "peak_rss_mb": stats.get("peak_rss_mb"),
        "crashes": len(crashes),
        "crash_inputs": crashes,
        "crash_exception": exception[:1],
        "exit_code": run.returncode,
        **({"error": out.strip().splitlines()[-1][:300] if out.strip() else "no output"}
           if run.returncode != 0 and not crashes else {}),
    }


# --------------------------------------------------------------------------- fallback
def _mutate(rng: random.Random, data: bytes, tokens: list[str]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        at = rng.randint(0, len(buf))
        if op < 0.3 and buf:
            buf[min(at, len(buf) - 1)] = rng.randint(0, 255)
        elif op < 0.55:
            buf[at:at] = rng.choice(tokens).encode()
        elif op < 0.8:
            del buf[at:at + rng.randint(1, 32)]
        else:
            a = rng.randint(0, len(buf))
            buf[at:at] = bytes(buf[a:a + rng.randint(1, 64)]) * rng.randint(1, 20)
    return bytes(buf)


def run_random(target: str, seconds: float, seed: int = 14) -> dict[str, Any]:
    """The fallback: random mutations of the seeds for ``seconds``, no coverage guidance."""
    from cedge.bench.fuzz_targets import _target

    one_input: Callable[[bytes], None] = _target(target)
    rng = random.Random(seed)
    seeds = seed_inputs(target)
    n, crashes, t_end = 0, [], time.monotonic() + seconds
    while time.monotonic() < t_end:
        data = _mutate(rng, rng.choice(seeds), _DICTIONARY[target])
        n += 1
        try:
            one_input(data)
        except Exception as err:  # noqa: BLE001 - any other exception is exactly what we look for
            if len(crashes) < 10:
                crashes.append({"exception": f"{type(err).__name__}: {str(err)[:200]}",
                                "input_b64": base64.b64encode(data[:256]).decode()})
    return {"target": target, "mode": "random-mutation", "note": "atheris not installed: no coverage guidance",
            "seconds": seconds, "executions": n, "exec_per_s": round(n / seconds), "crashes": len(crashes),
            "crash_inputs": crashes}


# --------------------------------------------------------------------------- hostile inputs
def _median_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def hostile_inputs(work: Path) -> dict[str, Any]:
    """Time to refuse each input of issue 14 that used to hang, blow up or raise a traceback."""
    from agent import wire_schema as ws
    from agent.config import ConfigError, load_profile
    from agent.spectral_files import SpectrumFileError, parse_spectrum_bytes
    from cedge.bench.fuzz_seeds import BOMB_2012, deep_envelope, valid_envelopes

    def refuse(fn: Callable[[], object], error: type[BaseException]) -> Callable[[], str]:
        def run() -> str:
            try:
                fn()
            except error as err:
                return getattr(err, "reason", type(err).__name__)
            raise AssertionError("hostile input accepted")
        return run

    meas = ws.uplink_topic("mob-1", "measurement")
    env = json.loads(dict(valid_envelopes())["measurement"])
    big_seq = json.dumps({**env, "seq": 2**63}).encode()
    lol = ['schema: 1', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lol += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    (work / "laughs.yaml").write_text("\n".join(lol))
    cases = {
        "row9_counted_zeroes_bomb_n42": refuse(lambda: parse_spectrum_bytes(BOMB_2012, "bomb.n42"), SpectrumFileError),
        "row11_json_1000_deep": refuse(lambda: ws.decode_uplink(meas, deep_envelope(1000)), ws.WireError),
        "row11_json_100000_deep": refuse(lambda: ws.decode_uplink(meas, deep_envelope(100_000)), ws.WireError),
        "row11_seq_2_63": refuse(lambda: ws.decode_uplink(meas, big_seq), ws.WireError),
        "yaml_billion_laughs_profile": refuse(lambda: load_profile(work / "laughs.yaml"), ConfigError),
    }
    return {name: {"refused_as": fn(), "ms_median": _median_ms(fn)} for name, fn in cases.items()}


# --------------------------------------------------------------------------- entry point
def run_bench(seconds: float = 20.0, json_out: bool = False, targets: tuple[str, ...] = TARGETS,
              out_dir: str | Path | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cedge-fuzz-"))
    try:
        use_atheris = atheris_available()
        results = []
        for target in targets:
            if not json_out:
                print(f"fuzzing {target} for {seconds:g} s ({'atheris' if use_atheris else 'random mutation'})",
                      file=sys.stderr)
            results.append(run_atheris(target, seconds, work) if use_atheris else run_random(target, seconds))
        result = {
            "bench": "fuzz",
            "mode": "atheris" if use_atheris else "random-mutation (atheris not installed: no coverage guidance)",
            "seconds_per_target": seconds,
            "targets": results,
            "crashes_total": sum(r["crashes"] for r in results),
            "hostile_inputs": hostile_inputs(work),
        }
        if out_dir is not None:
            from cedge.bench.results import save_results

            save_results(result, out_dir, "fuzz", lambda _out: [])
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
