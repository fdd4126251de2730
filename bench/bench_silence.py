"""
The silence rule alone, over many session-days: false alarms and a busy salon's detection time.

One command, from the project root::

    .venv/bin/python bench/bench_silence.py --salons 1000 --days 7

Replays the simulator's traffic through the real silence rule without the database
(``observability_demo.silence_replay``, which says how): thousands of session-days in minutes,
where ``bench/bench_detection.py`` runs a few hundred in ten. ``--set NAME=VALUE`` tries a
setting (``OBSERVABILITY_`` omitted).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def report(result: dict) -> str:
    """A few lines of text (printed; ``bench/DETECTION.md`` quotes them)."""
    from observability import config

    days = result["session_days"]
    fails, warns = len(result["false_fail"]), len(result["false_warn"])
    lines = [
        f"silence rule alone: {result['salons']} salons x {result['days']} days = "
        f"{days:.0f} session-days, seed {result['seed']}, "
        f"{result['wall_seconds']:.0f} s; warning probability "
        f"{config.silence_warning_probability():g}, failure probability "
        f"{config.silence_failure_probability():g}, day prior {config.silence_day_prior():g}",
        f"false FAIL {fails} ({1000 * fails / days:.2f} per 1,000 session-days), "
        f"false WARN {warns} ({1000 * warns / days:.2f} per 1,000 session-days)",
        f"busy salon dying in its busy hours ({result['deaths']}): WARN p50 "
        f"{result['warn_p50']} / p95 {result['warn_p95']} min "
        f"({result['within_30_warn']} within 30), FAIL p50 {result['fail_p50']} / p95 "
        f"{result['fail_p95']} min ({result['within_30_fail']} within 30)",
    ]
    for kind, alarms in (("FAIL", result["false_fail"]), ("WARN", result["false_warn"])):
        for sid, profile, since, quiet, usual, pace in alarms[:10]:
            lines.append(
                f"  false {kind} {sid} ({profile}) silent {quiet:.0f} min from "
                f"{since:%a %H:%M} UTC, usually {usual:.1f} minutes with a write; pace "
                f"{pace[0]:.0f} counted / {pace[1]:.1f} expected"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--salons", type=int, default=600)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="try a setting, e.g. SILENCE_FAILURE_PROBABILITY=1e-7 (OBSERVABILITY_ omitted)",
    )
    args = parser.parse_args(argv)
    _setup()
    from django.test import override_settings

    for item in args.set:
        name, _, value = item.partition("=")
        # Through override_settings: observability.config forgets a value on setting_changed.
        override_settings(**{f"OBSERVABILITY_{name}": float(value)}).enable()
    from observability_demo import silence_replay

    print(report(silence_replay.run(args.salons, args.days, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
