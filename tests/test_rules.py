"""Each verdict rule fires on its failure mode and stays quiet on a healthy Baileys session."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.db import connections
from django.utils import timezone

from observability import rules, sessions
from observability.models import Company, WhatsAppAuth, WhatsAppKey
from observability.rules import SessionFacts, Status
from observability_demo import fakes
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

SALON = 962302
SID = f"company_{SALON}"
PHONE = "79001234567"


def _execute(sql: str, params=None) -> None:
    with connections["bot"].cursor() as cursor:
        cursor.execute(sql, params or [])


def _healthy(session_id: str = SID, **kwargs) -> fakes.LifecycleKeys:
    """A QR-paired v7 session three weeks after pairing, its salon's number matching."""
    salon = int(session_id.removeprefix("company_"))
    if not Company.objects.filter(company_id=salon).exists():
        factories.make_company(salon, whatsapp_phone="+7 (900) 123-45-67")
    kwargs.setdefault("phone", PHONE)
    return factories.make_session(session_id, **kwargs)


def _rules_fired(session_id: str = SID) -> tuple[str, ...]:
    return sessions.get_session(session_id).rules


def test_healthy_qr_v7_session_three_weeks_after_pairing__is_ok():
    """Most pre-keys and the app-state keys are past expires_at, registered is false: OK."""
    now = timezone.now()
    keys = _healthy(now=now)
    health = sessions.get_session(SID, now=now)
    assert health.status is Status.OK and health.reasons == () and health.rules == ()
    assert health.registered is False and health.pairing == "QR"
    expired_pre_keys = WhatsAppKey.objects.filter(
        company_id=SID, key_type="pre-key", expires_at__lt=now
    ).count()
    assert expired_pre_keys > health.key_counts["pre-key"] / 2
    assert not WhatsAppKey.objects.filter(
        company_id=SID, key_type="app-state-sync-key", expires_at__gte=now
    ).exists()
    assert health.expired_share > 0.5
    assert health.key_counts["pre-key"] == 812 - 30
    assert health.facts.next_pre_key_id == keys.next_pre_key_id == 813
    assert health.facts.app_state_key_stored
    # v7's identity-key rows are counted and shown, never judged.
    assert health.notes == (
        "Key types the bot's list does not name: identity-key 40. Baileys v7 writes "
        "identity-key rows per contact; nothing to do.",
    )


def test_healthy_pairing_code_v6_session_with_top_ups__is_ok():
    """A v6 session (30 pre-keys) used by 60 new contacts was topped up by fives: still OK."""
    life = fakes.Lifecycle(version=6, new_contacts=60, contacts=60, paired_days_ago=45)
    keys = _healthy(life=life, registered=True)
    health = sessions.get_session(SID)
    assert health.status is Status.OK, health.reasons
    assert health.pairing == "pairing code" and health.registered is True
    assert keys.next_pre_key_id > 31  # top-ups of 5 after the first 30
    assert health.facts.max_pre_key_id < keys.next_pre_key_id
    assert "identity-key" not in health.key_counts


def test_not_paired__fails_when_pairing_never_finished():
    """Creds straight from initAuthCreds (no me.id, no account) FAIL as not paired."""
    factories.make_auth(SID, paired=False)
    health = sessions.get_session(SID)
    assert health.status is Status.FAIL and health.rules == ("not_paired",)
    assert "no me.id and account" in health.reasons[0]
    assert "Pair the salon's WhatsApp again" in health.reasons[0]


def test_not_paired__fails_without_account_only():
    """A me.id without the signed account is not a finished pairing either."""
    _healthy()
    _execute("UPDATE whatsapp_auth SET creds = creds - 'account' WHERE company_id = %s", [SID])
    health = sessions.get_session(SID)
    assert health.status is Status.FAIL and health.rules == ("not_paired",)
    assert "no account," in health.reasons[0]


def test_wrong_number__fails_naming_both_numbers_masked():
    """Logged in as another number than companies.whatsapp_phone: FAIL, both numbers masked."""
    factories.make_company(SALON, whatsapp_phone="8 916 000-11-22")
    factories.make_session(SID, phone=PHONE)
    health = sessions.get_session(SID)
    assert health.status is Status.FAIL and health.rules == ("wrong_number",)
    assert "logged in as 7900***4567" in health.reasons[0]
    assert "7916***1122" in health.reasons[0]
    assert PHONE not in health.reasons[0] and "79160001122" not in health.reasons[0]


def test_wrong_number__no_salon_phone_is_no_signal():
    """Without companies.whatsapp_phone nothing is compared."""
    factories.make_company(SALON, whatsapp_phone=None)
    factories.make_session(SID)
    assert sessions.get_session(SID).status is Status.OK


def test_creds_behind_keys__fails_when_a_pre_key_is_at_or_above_next_pre_key_id():
    """A stored pre-key id >= creds.nextPreKeyId: the creds save of an upload was lost."""
    _healthy()
    _execute(
        "UPDATE whatsapp_auth SET creds = jsonb_set(creds, '{nextPreKeyId}', '812') "
        "WHERE company_id = %s",
        [SID],
    )
    health = sessions.get_session(SID)
    assert health.status is Status.FAIL and health.rules == ("creds_behind_keys",)
    assert "pre-key 812 is stored but creds.nextPreKeyId is 812" in health.reasons[0]
    assert "set nextPreKeyId and firstUnuploadedPreKeyId to 813" in health.reasons[0]


def test_creds_behind_keys__a_non_numeric_pre_key_id_is_no_signal():
    """A pre-key id that is not a number (never written by Baileys) proves nothing."""
    _healthy()
    factories.make_keys(SID, "pre-key", 1, first_id=5000)
    WhatsAppKey.objects.filter(company_id=SID, key_type="pre-key", key_id="5000").update(
        key_id="x5000"
    )
    health = sessions.get_session(SID)
    assert health.facts.max_pre_key_id is None
    assert health.status is Status.OK


def test_pre_key_pool__fails_without_pre_keys_and_warns_below_five():
    """No stored pre-key on a paired session FAILs; fewer than 5 WARNs."""
    _healthy()
    WhatsAppKey.objects.filter(company_id=SID, key_type="pre-key").delete()
    health = sessions.get_session(SID)
    assert health.status is Status.FAIL and health.rules == ("pre_key_pool",)
    assert "No pre-key is stored" in health.reasons[0]
    factories.make_keys(SID, "pre-key", 3, first_id=700)
    health = sessions.get_session(SID)
    assert health.status is Status.WARN and health.rules == ("pre_key_pool",)
    assert "Only 3 pre-key(s) stored" in health.reasons[0]


def test_pre_key_pool__threshold_is_a_setting(settings):
    """OBSERVABILITY_MIN_PREKEY_COUNT moves the warning line, at once, both ways."""
    factories.make_auth(SID)
    factories.make_keys(SID, "pre-key", 8)
    assert sessions.get_session(SID).status is Status.OK  # the default, read and remembered
    settings.OBSERVABILITY_MIN_PREKEY_COUNT = 10
    assert sessions.get_session(SID).rules == ("pre_key_pool",)
    settings.OBSERVABILITY_MIN_PREKEY_COUNT = 3
    assert sessions.get_session(SID).status is Status.OK


def test_app_state_key_missing__fails_when_my_app_state_key_is_gone():
    """A deleted app-state-sync-key named by myAppStateKeyId FAILs; an older key may go."""
    keys = _healthy()
    older, newest = keys.app_state_key_ids
    WhatsAppKey.objects.filter(company_id=SID, key_id=older).delete()
    assert sessions.get_session(SID).status is Status.OK
    WhatsAppKey.objects.filter(company_id=SID, key_id=newest).delete()
    health = sessions.get_session(SID)
    assert health.status is Status.FAIL and health.rules == ("app_state_key_missing",)
    assert f"names {newest!r}, which is not stored" in health.reasons[0]


def test_one_login_twice__same_creds_under_two_spellings_fail_both():
    """The same creds under 962302 and company_962302: one login in two places, both FAIL."""
    _healthy()
    _execute(
        "INSERT INTO whatsapp_auth (company_id, creds, created_at, updated_at) "
        "SELECT %s, creds, created_at, updated_at FROM whatsapp_auth WHERE company_id = %s",
        [str(SALON), SID],
    )
    for session_id, other in ((SID, str(SALON)), (str(SALON), SID)):
        health = sessions.get_session(session_id)
        assert health.status is Status.FAIL
        assert "one_login_twice" in health.rules
        assert f"One login in two places: {other!r}" in health.reasons[0]
        assert health.twin_session_id == other
    store = sessions.store_health()
    assert store.shared_logins == ((str(SALON), SID),)
    assert any(f.cause == "one_login_twice" and f.status is Status.FAIL for f in store.findings)


def test_one_login_twice__one_number_under_two_salons_fails():
    """Two salons' sessions logged in as one number (different keys) FAIL, phone masked."""
    _healthy()
    factories.make_company(962399, whatsapp_phone=PHONE)
    factories.make_session("962399", seed=2, phone=PHONE)
    health = sessions.get_session("962399")
    assert health.status is Status.FAIL and health.rules == ("one_login_twice",)
    assert f"One number in two places: {SID!r}" in health.reasons[0]
    assert "7900***4567" in health.reasons[0] and PHONE not in health.reasons[0]


def test_twin_login__two_spellings_with_different_logins_warn():
    """Both spellings hold creds of their own (different keys, different numbers): WARN."""
    _healthy()
    factories.make_session(str(SALON), seed=5, phone="79001234567")
    _execute(
        "UPDATE whatsapp_auth SET creds = jsonb_set(creds, '{me,id}', "
        "'\"79001234567:3@s.whatsapp.net\"') WHERE company_id = %s",
        [str(SALON)],
    )
    # Same number: one number in two places.
    assert "one_login_twice" in _rules_fired(str(SALON))
    _execute(
        "UPDATE whatsapp_auth SET creds = jsonb_set(creds, '{me,id}', "
        "'\"79009999999:3@s.whatsapp.net\"') WHERE company_id = %s",
        [str(SALON)],
    )
    assert _rules_fired(SID) == ("twin_login",)
    assert sessions.get_session(SID).status is Status.WARN


def test_twin_with_keys_only__is_an_orphan_not_a_fault_of_the_live_session():
    """Leftover keys under the other spelling WARN as orphans; the live session stays OK."""
    _healthy()
    factories.make_keys(str(SALON), "session", 4)
    live, leftovers = sessions.get_session(SID), sessions.get_session(str(SALON))
    assert live.status is Status.OK and live.twin_session_id == str(SALON)
    assert leftovers.status is Status.WARN and leftovers.rules == ("orphan_keys",)
    assert "cleanup_orphan_keys" in leftovers.reasons[0]


def test_bot_flags__disconnect_after_the_last_write_fails():
    """companies.disconnected_at after the last write: the bot never logged in again."""
    now = timezone.now()
    _healthy(now=now)
    Company.objects.filter(company_id=SALON).update(
        whatsapp_connected=False, disconnected_at=now - timedelta(minutes=1)
    )
    health = sessions.get_session(SID, now=now)
    assert health.status is Status.FAIL and health.rules == ("bot_flags",)
    assert "recorded a disconnect" in health.reasons[0]


def test_bot_flags__connected_false_fails_at_once_even_with_later_writes():
    """whatsapp_connected false FAILs at once, even when writes followed the last disconnect."""
    now = timezone.now()
    _healthy(now=now)
    Company.objects.filter(company_id=SALON).update(
        whatsapp_connected=False, disconnected_at=now - timedelta(days=2)
    )
    health = sessions.get_session(SID, now=now)
    assert health.status is Status.FAIL and health.rules == ("bot_flags",)
    assert "whatsapp_connected is false" in health.reasons[0]


def test_bot_flags__disconnect_after_the_bots_connect_fails_and_a_reconnect_clears_it():
    """disconnected_at later than whatsapp_connected_at FAILs; a later connect is OK again."""
    now = timezone.now()
    _healthy(now=now)
    connected = (now - timedelta(hours=3)).astimezone(UTC).replace(tzinfo=None)
    Company.objects.filter(company_id=SALON).update(
        whatsapp_connected=True,
        whatsapp_connected_at=connected,
        disconnected_at=now - timedelta(minutes=2),
    )
    health = sessions.get_session(SID, now=now)
    assert health.status is Status.FAIL and "recorded a disconnect" in health.reasons[0]
    Company.objects.filter(company_id=SALON).update(
        whatsapp_connected_at=(now - timedelta(minutes=1)).astimezone(UTC).replace(tzinfo=None)
    )
    assert sessions.get_session(SID, now=now).status is Status.OK


def test_bot_flags__null_columns_are_no_signal():
    """NULL whatsapp_connected and disconnected_at say nothing."""
    _healthy()
    Company.objects.filter(company_id=SALON).update(whatsapp_connected=None, disconnected_at=None)
    assert sessions.get_session(SID).status is Status.OK


def test_silence__warns_after_a_day_fails_after_two_and_says_quiet_salons_write_nothing():
    """No write to creds or keys for 30 h WARNs, for 3 days FAILs; the reason names quiet."""
    now = timezone.now()
    _healthy(now=now - timedelta(hours=30), connected_hours_ago=0)
    health = sessions.get_session(SID, now=now)
    assert health.status is Status.WARN and health.rules == ("silence",)
    assert "No key written for 30 hours" in health.reasons[0]
    assert "a quiet salon that sends and receives nothing writes nothing" in health.reasons[0]
    health = sessions.get_session(SID, now=now + timedelta(hours=42))
    assert health.status is Status.FAIL and "for 3 days" in health.reasons[0]


def test_silence__a_creds_write_counts_as_a_write():
    """A login rewrites the creds: keys quiet for days but creds written today is no silence."""
    now = timezone.now()
    _healthy(now=now - timedelta(days=3), connected_hours_ago=0)
    WhatsAppAuth.objects.filter(company_id=SID).update(updated_at=now - timedelta(hours=1))
    assert sessions.get_session(SID, now=now).status is Status.OK


def test_unknown_key_types__are_counted_and_never_fail():
    """Many rows of types the bot does not name stay a note on an OK session."""
    _healthy()
    factories.make_keys(SID, "some-future-type", 500)
    health = sessions.get_session(SID)
    assert health.status is Status.OK
    assert "some-future-type 500" in health.notes[0]
    assert health.as_dict()["notes"] == list(health.notes)


def test_session_id_spelling__unparseable_id_warns():
    """An id in neither spelling cannot be tied to a salon: WARN."""
    factories.make_session("salon-x")
    health = sessions.get_session("salon-x")
    assert health.status is Status.WARN and health.rules == ("session_id_spelling",)


def test_judge__worst_first_and_notes_apart():
    """judge() orders FAIL before WARN before notes, and the status is the worst."""
    now = timezone.now()
    facts = SessionFacts(
        "x",
        salon_id=None,
        has_auth=True,
        key_counts={"identity-key": 2},
    )
    judgement = rules.judge(facts, now)
    assert judgement.status is Status.FAIL
    assert judgement.rules == ("not_paired", "session_id_spelling")
    assert len(judgement.notes) == 1 and "identity-key 2" in judgement.notes[0]


def test_rules__every_rule_names_its_baileys_source_or_says_it_has_none():
    """Each rule's docstring cites a Baileys source file, or says there is no Baileys ground."""
    for rule in rules.RULES:
        doc = rule.__doc__ or ""
        assert "src/" in doc or "No Baileys ground" in doc, rule.__name__
