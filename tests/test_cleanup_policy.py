"""The retention table: what age may delete, per key type, and how settings change it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from observability import checks, cleanup
from observability.cleanup import policy
from observability.exceptions import BadInput
from observability.models import WhatsAppKey
from tests import factories

bot_tables = pytest.mark.django_db(databases=["default", "bot"])


def _aged(session_id: str, key_type: str, count: int, days_ago: float = 100):
    written = timezone.now() - timedelta(days=days_ago)
    return factories.make_keys(session_id, key_type, count, written_at=written)


def _left() -> dict[str, int]:
    counts: dict[str, int] = {}
    for key_type in WhatsAppKey.objects.values_list("key_type", flat=True):
        counts[key_type] = counts.get(key_type, 0) + 1
    return counts


def test_policy__every_rule_says_why_and_names_its_baileys_source():
    """Each key type's rule has a reason and the Baileys source file it rests on."""
    rules = policy.current(timezone.now()).rules
    assert [rule.key_type for rule in rules][-1] == policy.OTHER_TYPES
    for rule in rules:
        assert len(rule.reason) > 40, rule.key_type
        assert rule.source.startswith("src/") and ".ts" in rule.source, rule.key_type
    never = {rule.key_type for rule in rules if not rule.deletable}
    assert never == {
        "pre-key",
        "app-state-sync-key",
        "app-state-sync-version",
        "lid-mapping",
        "identity-key",
        policy.OTHER_TYPES,
    }


@bot_tables
def test_cleanup_expired_keys__lid_mapping_variants_follow_the_lid_mapping_rule(settings):
    """Types containing lid-mapping are kept like it, and go with it when a retention is set."""
    _aged("962302", "lid-mapping", 2)
    _aged("962302", "pn-lid-mapping", 3)
    report = cleanup.cleanup_expired_keys()
    assert report.total_seen == 0
    assert "never deleted for its age" in report.kept_reasons["pn-lid-mapping"]
    assert "resolveLIDSignalAddress" in report.kept_reasons["pn-lid-mapping"]

    settings.OBSERVABILITY_CLEANUP_RETENTION = {"lid-mapping": 101}
    assert cleanup.cleanup_expired_keys().total_seen == 0  # written 100 days ago: kept
    settings.OBSERVABILITY_CLEANUP_RETENTION = {"lid-mapping": 30}
    report = cleanup.cleanup_expired_keys(apply=True)
    assert report.rows_deleted == {"962302": {"lid-mapping": 2, "pn-lid-mapping": 3}}
    assert (
        "set by OBSERVABILITY_CLEANUP_RETENTION"
        in ({r["key_type"]: r for r in report.parameters["retention"]}["lid-mapping"]["reason"])
    )


@bot_tables
def test_cleanup_expired_keys__unknown_types_get_a_retention_only_from_the_setting(settings):
    """An unknown type is kept until the setting names it (or every other type)."""
    _aged("962302", "future-type", 2)
    _aged("962302", "other-type", 1)
    _aged("962302", "pre-key", 4)
    assert cleanup.cleanup_expired_keys().rows_kept == {
        "962302": {"future-type": 2, "other-type": 1, "pre-key": 4}
    }
    settings.OBSERVABILITY_CLEANUP_RETENTION = {"future-type": timedelta(days=50)}
    assert cleanup.cleanup_expired_keys(apply=True).total_deleted == 2
    settings.OBSERVABILITY_CLEANUP_RETENTION = {policy.OTHER_TYPES: 50}
    assert cleanup.cleanup_expired_keys(apply=True).rows_deleted == {"962302": {"other-type": 1}}
    assert _left() == {"pre-key": 4}


@bot_tables
def test_cleanup_expired_keys__no_deletable_type_deletes_nothing(settings):
    """With every contact type set to never, a run finds nothing to delete."""
    _aged("962302", "session", 3, days_ago=1000)
    deletable = [r.key_type for r in policy.DEFAULT_POLICY if r.deletable]
    settings.OBSERVABILITY_CLEANUP_RETENTION = dict.fromkeys(deletable)
    report = cleanup.cleanup_expired_keys(apply=True)
    assert (report.total_seen, report.total_deleted, report.total_kept) == (0, 0, 3)
    assert _left() == {"session": 3}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"session": "90"}, "must be a timedelta, a number of days or None"),
        ({"session": True}, "must be a timedelta"),
        ({"session": timedelta(hours=2)}, "at least one day"),
        ({"app-state-sync-key": 365}, "never deleted for its age"),
    ],
)
def test_cleanup_retention_setting__a_bad_value_is_a_system_check_error(settings, value, message):
    """A malformed retention is reported at startup (and refused by every run)."""
    settings.OBSERVABILITY_CLEANUP_RETENTION = value
    (error,) = checks.check_cleanup_retention()
    assert error.id == "observability.E002" and message in error.msg
    with pytest.raises(BadInput, match=message):
        policy.current(timezone.now())
    settings.OBSERVABILITY_CLEANUP_RETENTION = {"session": 120}
    assert checks.check_cleanup_retention() == []


def test_policy__the_readme_renders_the_table_as_it_is():
    """Each rule's retention and reason appear in the README's cleanup table, word for word."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for rule in (*policy.DEFAULT_POLICY, policy.DEFAULT_OTHER):
        name = rule.key_type if rule.key_type == policy.OTHER_TYPES else f"`{rule.key_type}`"
        kept = f"{rule.retention_days:g} days" if rule.deletable else "for ever"
        row = next((line for line in readme.splitlines() if line.startswith(f"| {name}")), "")
        assert f"| {kept} | {rule.reason} | {rule.source} |" in row, rule.key_type
