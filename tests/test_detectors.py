"""Tests for the history detectors (observability.rules.HISTORY_RULES) through the real refresh."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections

from observability import rules, snapshot
from observability.models import (
    HOURS_PER_WEEK,
    RHYTHM_WEEKS,
    SessionChange,
    SessionRhythm,
    SessionState,
    WhatsAppAuth,
    WhatsAppKey,
)
from observability.rules import SessionFacts, SessionHistory, Status
from observability.snapshot import detect
from observability_demo import silence_replay, simulator
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

SID = "company_962302"
T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday, noon UTC
MIN = timedelta(minutes=1)


def _session(now: datetime = T0) -> None:
    factories.make_company(962302, whatsapp_phone="+7 (900) 123-45-67")
    factories.make_session(SID, now=now, phone="79001234567")
    snapshot.refresh(now=now)


def _state() -> SessionState:
    return SessionState.objects.get(session_id=SID)


def _rules() -> tuple[str, ...]:
    return tuple(_state().facts.get("rules") or ())


def _execute(sql: str, params: list) -> None:
    """Write as the bot would at the moment given (the updated_at trigger stamps wall time)."""
    with simulator.simulated_clock() as cursor:
        cursor.execute(sql, params)


def _rewrite_creds(at: datetime, *, next_pre_key_id: int | None = None) -> None:
    if next_pre_key_id is None:
        _execute("UPDATE whatsapp_auth SET updated_at = %s WHERE company_id = %s", [at, SID])
        return
    _execute(
        "UPDATE whatsapp_auth SET updated_at = %s, creds = jsonb_set(creds, '{nextPreKeyId}', "
        "to_jsonb(%s::int)) WHERE company_id = %s",
        [at, next_pre_key_id, SID],
    )


def _next_pre_key_id() -> int:
    with connections["bot"].cursor() as cursor:
        cursor.execute(
            "SELECT (creds ->> 'nextPreKeyId')::int FROM whatsapp_auth WHERE company_id = %s",
            [SID],
        )
        return cursor.fetchone()[0]


def _create_pre_keys(count: int, at: datetime) -> None:
    """Baileys' getNextPreKeys: store the pre-keys, then save nextPreKeyId = last id + 1."""
    first = _next_pre_key_id()
    factories.make_keys(SID, "pre-key", count, written_at=at, first_id=first)
    _rewrite_creds(at, next_pre_key_id=first + count)


def test_reconnect_loop__creds_rewritten_in_three_minutes_fails_naming_440_then_clears():
    """Creds rewritten in 3 separate minutes: FAIL naming the 440 conflict; quiet again: OK."""
    _session()
    for minute in (1, 2):
        _rewrite_creds(T0 + minute * MIN - timedelta(seconds=20))
        snapshot.refresh(now=T0 + minute * MIN)
        assert _state().status == "OK"
    _rewrite_creds(T0 + 3 * MIN - timedelta(seconds=20))
    snapshot.refresh(now=T0 + 3 * MIN)
    state = _state()
    assert state.status == "FAIL" and "reconnect_loop" in _rules()
    assert "440" in state.reasons[0] and "two places" in state.reasons[0]
    # Nothing written any more: the window passes and the next refresh clears it by itself.
    snapshot.refresh(now=T0 + 14 * MIN)
    assert _state().status == "OK"
    statuses = SessionChange.objects.filter(session_id=SID, kind="status")
    assert sorted(statuses.values_list("new_status", flat=True)) == ["FAIL", "OK"]


def test_reconnect_loop__creds_saved_with_pre_keys_are_not_logins():
    """Creds rewritten because nextPreKeyId moved (pre-key saves) do not count as logins."""
    _session()
    for minute in (1, 2, 3, 4):
        _create_pre_keys(5, T0 + minute * MIN - timedelta(seconds=20))
        snapshot.refresh(now=T0 + minute * MIN)
    assert "reconnect_loop" not in _rules()


def _connect(at: datetime) -> None:
    """The bot's connection.update close and open, then Baileys' creds write at CB:success."""
    _execute(
        "UPDATE companies SET whatsapp_connected = true, disconnected_at = %s, "
        "whatsapp_connected_at = %s, updated_at = %s WHERE company_id = %s",
        [at - timedelta(seconds=1), _naive(at), _naive(at), 962302],
    )
    _rewrite_creds(at)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def test_reconnect_loop__a_second_connection_within_two_minutes_fails_at_once():
    """The bot connected at minute 1 and again at minute 2: FAIL at the second refresh."""
    _session()
    _connect(T0 + MIN - timedelta(seconds=50))
    snapshot.refresh(now=T0 + MIN)
    assert _state().status == "OK"
    _connect(T0 + 2 * MIN - timedelta(seconds=30))
    snapshot.refresh(now=T0 + 2 * MIN)
    state = _state()
    assert state.status == "FAIL" and _rules() == ("reconnect_loop",)
    assert "connected again 80 s after its previous connection" in state.reasons[0]
    # No third login: the recheck after the window clears it without any write.
    snapshot.refresh(now=T0 + 5 * MIN)
    assert _state().status == "OK"


def test_reconnect_loop__one_login_writing_creds_across_two_refreshes_is_not_a_loop():
    """One connection whose creds writes straddle a refresh (two rewrites, one login): OK."""
    _session()
    _connect(T0 + MIN - timedelta(seconds=1))
    snapshot.refresh(now=T0 + MIN)
    _rewrite_creds(T0 + MIN + timedelta(seconds=2))  # lastPropHash after the connection opened
    snapshot.refresh(now=T0 + 2 * MIN)
    assert _state().status == "OK"
    # A day later the next login is no loop either.
    _connect(T0 + timedelta(days=1))
    snapshot.refresh(now=T0 + timedelta(days=1, minutes=1))
    assert _state().status == "OK"


def test_decryption_failures__pre_keys_one_by_one_warn_then_fail_as_the_rate_grows():
    """A nextPreKeyId rising by 1 three times in minutes WARNs; ten times FAILs."""
    _session()
    for minute in range(1, 4):
        _create_pre_keys(1, T0 + minute * MIN - timedelta(seconds=10))
        snapshot.refresh(now=T0 + minute * MIN)
    assert _state().status == "WARN" and _rules() == ("decryption_failures",)
    assert "3 pre-keys were created one at a time" in _state().reasons[0]
    for minute in range(4, 8):
        _create_pre_keys(2, T0 + minute * MIN - timedelta(seconds=10))
        snapshot.refresh(now=T0 + minute * MIN)
    assert _state().status == "FAIL" and "decryption_failures" in _rules()


def test_decryption_failures__a_top_up_of_five_is_not_a_failure():
    """An upload of 5 pre-keys (MIN_PREKEY_COUNT) is a top-up, not decryption failures."""
    _session()
    _create_pre_keys(5, T0 + 30 * timedelta(seconds=1))
    snapshot.refresh(now=T0 + MIN)
    assert _state().status == "OK"
    kinds = SessionChange.objects.filter(session_id=SID).values_list("kind", flat=True)
    assert "prekeys_topped_up" in kinds


def test_decryption_failures__a_storm_of_seven_a_minute_fails():
    """Seven pre-keys a minute (5 + 2 made one at a time, at best): FAIL within minutes."""
    _session()
    for minute in range(1, 6):
        _create_pre_keys(7, T0 + minute * MIN - timedelta(seconds=10))
        snapshot.refresh(now=T0 + minute * MIN)
    assert _state().status == "FAIL" and "decryption_failures" in _rules()
    assert "10 pre-keys were created one at a time" in _state().reasons[0]


def test_decryption_failures__a_rise_over_a_long_gap_between_snapshots_is_not_a_storm():
    """The refresh stopped for an hour while uploads piled up (15): recorded, not a FAIL."""
    _session()
    _create_pre_keys(15, T0 + 30 * MIN)
    snapshot.refresh(now=T0 + 60 * MIN)  # the previous snapshot is an hour old
    assert _state().status == "OK"
    kinds = list(SessionChange.objects.filter(session_id=SID).values_list("kind", flat=True))
    assert "prekeys_topped_up" in kinds and "prekey_one_by_one" not in kinds
    _create_pre_keys(15, T0 + 61 * MIN - timedelta(seconds=10))
    snapshot.refresh(now=T0 + 61 * MIN)  # a minute apart: 15 made one at a time
    assert _state().status == "FAIL" and "decryption_failures" in _rules()


@pytest.mark.parametrize("count", [5, 812])
def test_decryption_failures__an_upload_of_five_or_812_is_a_top_up(count):
    """Rises of exactly MIN_PREKEY_COUNT or INITIAL_PREKEY_COUNT stay top-ups, minute by minute."""
    _session()
    for minute in range(1, 4):
        _create_pre_keys(count, T0 + minute * MIN - timedelta(seconds=10))
        snapshot.refresh(now=T0 + minute * MIN)
    assert _state().status == "OK"
    kinds = list(SessionChange.objects.filter(session_id=SID).values_list("kind", flat=True))
    assert kinds.count("prekeys_topped_up") == 3 and "prekey_one_by_one" not in kinds


def test_decryption_failures__six_is_a_top_up_and_one_made_alone():
    """A rise of 6 is an upload of 5 and one pre-key for a retry receipt: both rows, OK."""
    _session()
    first = _next_pre_key_id()
    _create_pre_keys(6, T0 + 50 * timedelta(seconds=1))
    snapshot.refresh(now=T0 + MIN)
    rows = dict(
        SessionChange.objects.filter(session_id=SID)
        .values_list("kind", "data")
        .filter(kind__startswith="prekey")
    )
    numbers = {kind: (data["old"], data["new"]) for kind, data in rows.items()}
    assert numbers["prekeys_topped_up"] == (first, first + 5)
    assert numbers["prekey_one_by_one"] == (first + 5, first + 6)
    assert _state().status == "OK"


def test_decryption_failures__a_new_login_first_upload_is_a_top_up():
    """A rise of 40 in nextPreKeyId across a new pairing (a first upload): a top-up, OK."""
    _session()
    first = _next_pre_key_id()
    WhatsAppAuth.objects.filter(company_id=SID).delete()
    factories.make_auth(SID, seed=7, phone="79001234567", next_pre_key_id=first + 40)
    snapshot.refresh(now=T0 + MIN)
    kinds = list(SessionChange.objects.filter(session_id=SID).values_list("kind", flat=True))
    assert "paired_again" in kinds and "prekeys_topped_up" in kinds
    assert "prekey_one_by_one" not in kinds and "decryption_failures" not in _rules()


def test_session_rows_lost__a_sharp_fall_within_the_hour_warns():
    """Most of a session's per-contact 'session' rows deleted: WARN session_rows_lost."""
    _session()
    rows = WhatsAppKey.objects.filter(company_id=SID, key_type="session")
    before = rows.count()
    keep = list(rows.values_list("key_id", flat=True)[:5])
    rows.exclude(key_id__in=keep).delete()
    snapshot.refresh(full=True, now=T0 + 5 * MIN)
    state = _state()
    assert state.status == "WARN" and _rules() == ("session_rows_lost",)
    assert f"{before - 5} of {before} per-contact 'session' rows" in state.reasons[0]


def test_paired_again__a_new_device_while_working_warns_and_is_on_the_timeline():
    """A new device number in me.id while the session was OK: a timeline event and a WARN."""
    _session()
    _execute(
        "UPDATE whatsapp_auth SET updated_at = %s, creds = jsonb_set(creds, '{me,id}', "
        "'\"79001234567:77@s.whatsapp.net\"') WHERE company_id = %s",
        [T0 + 30 * timedelta(seconds=1), SID],
    )
    snapshot.refresh(now=T0 + MIN)
    change = SessionChange.objects.get(session_id=SID, kind="paired_again")
    assert "new device number" in change.detail and change.data["was"] == "OK"
    assert (
        _state().status == "WARN" and "paired again while it was working" in (_state().reasons[0])
    )


def test_paired_again__after_a_failure_is_the_expected_repair_and_stays_ok():
    """A new identity key after the session failed is only a timeline event."""
    _session()
    _execute("UPDATE whatsapp_auth SET creds = creds - 'account' WHERE company_id = %s", [SID])
    snapshot.refresh(full=True, now=T0 + MIN)
    assert _state().status == "FAIL"
    _execute(
        "UPDATE whatsapp_auth SET updated_at = %s, creds = jsonb_set(creds || "
        "'{\"account\": {}}'::jsonb, '{signedIdentityKey,public}', '\"bmV3\"') "
        "WHERE company_id = %s",
        [T0 + 90 * timedelta(seconds=1), SID],
    )
    snapshot.refresh(now=T0 + 2 * MIN)
    assert SessionChange.objects.filter(session_id=SID, kind="paired_again").exists()
    assert _state().status == "OK"


# --- Silence against the session's own rhythm ---------------------------------------------------


def _rates(day: float, night: float = 0.0) -> tuple[float, ...]:
    """Writes per hour: ``day`` from 08:00 to 20:00 UTC every day, ``night`` otherwise."""
    return tuple(day if 8 <= hour % 24 < 20 else night for hour in range(rules.HOURS_PER_WEEK))


def _paired(last_write: datetime) -> SessionFacts:
    return SessionFacts(
        SID, has_auth=True, me_id_present=True, has_account=True, last_write=last_write
    )


#: A morning as busy as usual: 90 minutes with a write counted where 90 were expected.
USUAL_MORNING = (90.0, 90.0)


def test_silence_rhythm__a_busy_salon_silent_at_noon_warns_then_fails_within_half_an_hour():
    """Writes in 30 minutes an hour at noon, a usual morning: WARN within 15 min, FAIL by 25."""
    history = SessionHistory(rates=_rates(30), pace=USUAL_MORNING)
    noon = T0
    assert rules.silence_rhythm(_paired(noon - 9 * MIN), history, noon) is None
    warn = rules.silence_rhythm(_paired(noon - 15 * MIN), history, noon)
    assert warn is not None and warn.status is Status.WARN
    fail = rules.silence_rhythm(_paired(noon - 25 * MIN), history, noon)
    assert fail is not None and fail.status is Status.FAIL
    assert "Unusual silence" in fail.sentence


def test_silence_rhythm__a_calm_morning_makes_the_same_silence_less_surprising():
    """Half the usual writes this morning: 25 min of silence at noon is no FAIL, only a WARN."""
    calm = SessionHistory(rates=_rates(30), pace=(45.0, 90.0))
    verdict = rules.silence_rhythm(_paired(T0 - 25 * MIN), calm, T0)
    assert verdict is not None and verdict.status is Status.WARN
    # A busy morning does not make it more surprising than a usual one (capped at the rhythm).
    busy = SessionHistory(rates=_rates(30), pace=(180.0, 90.0))
    assert rules.silence_rhythm(_paired(T0 - 9 * MIN), busy, T0) is None


def test_silence_probability__day_to_day_variation_fattens_the_tail():
    """Without today's writes to go by, a silence is more likely than a Poisson model says."""
    poisson = math.exp(-20)
    unknown_day = rules.silence_probability(20, (0.0, 0.0))
    known_day = rules.silence_probability(20, (400.0, 400.0))
    assert unknown_day > 1000 * poisson
    assert poisson < known_day < unknown_day
    assert known_day == pytest.approx(poisson, rel=2)


def test_silence_rhythm__a_salon_quiet_every_night_is_not_flagged_at_night():
    """No writes expected at night: silent from 20:00 to 07:30 is not flagged."""
    history = SessionHistory(rates=_rates(30), pace=USUAL_MORNING)
    evening = datetime(2026, 3, 4, 19, 59, tzinfo=UTC)
    morning = datetime(2026, 3, 5, 7, 30, tzinfo=UTC)
    assert rules.silence_rhythm(_paired(evening), history, morning) is None


def test_silence_rhythm__replaces_the_flat_rule_once_the_rhythm_is_known():
    """With a rhythm, 30 h of silence over a quiet weekend is not the flat rule's WARN."""
    facts = _paired(T0 - timedelta(hours=30))
    flat = rules.judge(facts, T0)
    assert "silence" in flat.rules
    known = rules.judge(facts, T0, SessionHistory(rates=_rates(0.01)))
    assert "silence" not in known.rules
    unknown = rules.judge(facts, T0, SessionHistory(rates=None))
    assert "silence" in unknown.rules


def test_rates__learned_per_hour_of_week_only_after_enough_history():
    """count_write fills the hour's counter; rates need a week of observation and writes."""
    rhythm = detect.new_rhythm(SID, T0 - timedelta(days=3))
    for day in range(3):
        detect.count_write(rhythm, T0 - timedelta(days=day, hours=1), 40)
    assert detect.rates(rhythm, T0) is None  # three days observed: the flat rule stays
    rhythm.observed_since = T0 - timedelta(days=21)
    for day in range(3, 21):
        for clock in (10, 11, 12):  # 10:00 to 12:59 every day
            detect.count_write(rhythm, T0.replace(hour=clock) - timedelta(days=day), 40)
    learned = detect.rates(rhythm, T0)
    assert learned is not None
    eleven = rules.hour_index(T0 - timedelta(hours=1))
    assert learned[eleven] > 10  # 40 minutes with a write at 11:00 most days
    # The busy hours' edges take the quiet neighbour's rate: an hour off is no surprise.
    assert learned[rules.hour_index(T0 - timedelta(hours=2))] == 0
    assert learned[rules.hour_index(T0 - timedelta(hours=8))] == 0


def test_pace__counts_todays_minutes_with_a_write_against_the_rhythm():
    """The pace is the minutes with a write counted before the silence, and those expected."""
    rhythm = detect.new_rhythm(SID, T0 - timedelta(weeks=4))
    for week in range(1, 4):
        for hour in range(24):
            detect.count_write(rhythm, T0 - timedelta(weeks=week, hours=hour), 40)
    learned = detect.rates(rhythm, T0)
    counted, expected = detect.pace(rhythm, learned, T0)
    assert counted == 0  # nothing counted today
    assert expected == pytest.approx(90, abs=1)  # 3 h at 30 an hour (3 busy weeks of 4 seen)
    for hour in range(1, 5):
        detect.count_write(rhythm, T0 - timedelta(hours=hour), 40)
    assert detect.pace(rhythm, learned, T0)[0] == 120  # 12:00 back to 09:00, 3 full hours


def test_refresh__learns_the_rhythm_and_flags_a_busy_salon_that_goes_silent():
    """The refresh counts writes into the rhythm and rechecks a silent session unprompted."""
    _session(T0 - 2 * MIN)
    rhythm = SessionRhythm.objects.get(session_id=SID)
    rhythm.observed_since = T0 - timedelta(weeks=4)
    for week in range(0, 4):  # busy around noon every week, this morning included
        for hour in (-2, -1, 0, 1):
            if week or hour < 0:
                detect.count_write(rhythm, T0 - timedelta(weeks=week, hours=-hour), 50)
    rhythm.save()
    factories.make_keys(SID, "session", 1, written_at=T0 - timedelta(seconds=30), seed=9)
    snapshot.refresh(now=T0)
    rhythm.refresh_from_db()
    assert sum(rhythm.counts) == 701  # the write just seen is counted
    assert rhythm.recheck_at is not None and rhythm.recheck_at < T0 + timedelta(minutes=30)
    moment = T0
    while moment < T0 + timedelta(minutes=30) and _state().status != "FAIL":
        moment += MIN
        snapshot.refresh(now=moment)  # nothing written: only the recheck judges it
    assert _state().status == "FAIL" and "silence_rhythm" in _rules()
    assert moment - T0 <= timedelta(minutes=30)


def _stored_rhythm(weeks: list[int]) -> SessionRhythm:
    """The session's stored rhythm given these weeks, every counter a different non-zero."""
    _session(T0 - 2 * MIN)
    rhythm = SessionRhythm.objects.get(session_id=SID)
    rhythm.observed_since = T0 - timedelta(weeks=5)
    rhythm.weeks = weeks
    rhythm.counts = list(range(1, RHYTHM_WEEKS * HOURS_PER_WEEK + 1))
    rhythm.save()
    return rhythm


def test_refresh__a_week_slot_reused_is_stored_as_count_write_computes_it():
    """A write in a new week zeroes its slot's 168 counters alone in the row, then counts it."""
    week = detect.week_number(T0)
    slot = week % RHYTHM_WEEKS
    # Every slot holds one of the four weeks before this one: this week's slot the oldest.
    before = _stored_rhythm([week - ((slot - s) % RHYTHM_WEEKS or RHYTHM_WEEKS) for s in range(4)])
    factories.make_keys(SID, "session", 1, written_at=T0 - timedelta(seconds=30), seed=9)
    snapshot.refresh(now=T0)
    stored = SessionRhythm.objects.get(session_id=SID)
    assert stored.last_write == T0 - timedelta(seconds=30)
    expected = SessionRhythm(weeks=list(before.weeks), counts=list(before.counts))
    detect.count_write(expected, stored.last_write)
    assert (stored.weeks, stored.counts) == (expected.weeks, expected.counts)
    base = slot * HOURS_PER_WEEK
    assert stored.weeks[slot] == week
    assert stored.counts[base + rules.hour_index(T0 - MIN)] == 1  # Wednesday 11:00 counted
    assert stored.counts[:base] == before.counts[:base]  # the other slots untouched
    assert stored.counts[base + HOURS_PER_WEEK :] == before.counts[base + HOURS_PER_WEEK :]
    assert sum(stored.counts[base : base + HOURS_PER_WEEK]) == 1  # the old week's counts gone


def test_refresh__a_write_older_than_its_slots_week_is_not_counted_in_the_row():
    """A slot holding a later week (the clock went back): the row's counters stay as they were."""
    week = detect.week_number(T0)
    weeks = [week - 1] * RHYTHM_WEEKS
    weeks[week % RHYTHM_WEEKS] = week + RHYTHM_WEEKS
    before = _stored_rhythm(weeks)
    factories.make_keys(SID, "session", 1, written_at=T0 - timedelta(seconds=30), seed=9)
    snapshot.refresh(now=T0)
    stored = SessionRhythm.objects.get(session_id=SID)
    assert stored.last_write == T0 - timedelta(seconds=30)  # seen, so not counted again
    assert (stored.weeks, stored.counts) == (weeks, before.counts)


def test_refresh__a_new_rhythm_is_stored_as_new_rhythm_and_count_write_make_it():
    """A first snapshot stores 672 zeroed counters; a write at that moment counted in them."""
    factories.make_company(962302)
    factories.make_session(SID, now=T0 - MIN)
    factories.make_keys(SID, "session", 1, written_at=T0, seed=9)
    snapshot.refresh(now=T0)
    stored = SessionRhythm.objects.get(session_id=SID)
    expected = detect.new_rhythm(SID, T0)
    assert detect.count_write(expected, T0) is not None
    assert stored.last_write == T0
    assert (stored.weeks, stored.counts) == (expected.weeks, expected.counts)


# --- The simulator's normal traffic ---------------------------------------------------------


def test_simulator__normal_traffic_stays_ok_and_injected_failures_are_caught():
    """Untouched salons stay OK for an hour; a logout and a reconnect loop are caught fast."""
    sim = simulator.Simulator(6, T0 - timedelta(hours=1), seed=3)
    sim.create(tables=False)
    snapshot.refresh(full=True, now=sim.now)
    logout, loop = sim.salons[1], sim.salons[4]
    caught: dict[str, datetime] = {}
    for minute in range(60):
        if minute == 20:
            sim.inject(logout, simulator.LOGOUT)
            sim.inject(loop, simulator.RECONNECT_LOOP)
        sim.step()
        snapshot.refresh(now=sim.now)
        for salon in (logout, loop):
            fired = SessionState.objects.get(session_id=salon.session_id).facts.get("rules")
            if salon.failed_at and fired and salon.session_id not in caught:
                caught[salon.session_id] = sim.now
    assert caught[logout.session_id] - logout.failed_at <= 2 * MIN
    assert caught[loop.session_id] - loop.first_trace <= 2 * MIN  # at its second login
    untouched = [s.session_id for s in sim.salons if s not in (logout, loop)]
    statuses = SessionState.objects.filter(session_id__in=untouched)
    assert set(statuses.values_list("status", flat=True)) == {"OK"}
    assert not SessionChange.objects.filter(session_id__in=untouched, kind="status").exists()


def test_simulator__a_decryption_storm_is_caught_within_two_minutes_of_its_second_pre_key():
    """The storm's second pre-key made one at a time tells it apart; the WARN follows at once."""
    sim = simulator.Simulator(6, T0 - timedelta(hours=1), seed=3)
    sim.create(tables=False)
    snapshot.refresh(full=True, now=sim.now)
    storm = sim.salons[2]
    caught = None
    for minute in range(40):
        if minute == 5:
            sim.inject(storm, simulator.DECRYPT_STORM)
        sim.step()
        snapshot.refresh(now=sim.now)
        fired = SessionState.objects.get(session_id=storm.session_id).facts.get("rules") or []
        if caught is None and "decryption_failures" in fired:
            caught = sim.now
    assert caught is not None and storm.telling_trace is not None
    assert storm.first_trace <= storm.telling_trace == sorted(storm.storm_moments)[1]
    assert timedelta(0) <= caught - storm.telling_trace <= 2 * MIN


def test_silence_rhythm__quiet_on_the_simulators_traffic_and_catches_a_busy_salons_death():
    """Two simulated days of 36 salons: no false FAIL; a busy salon's death WARNs within 30 min."""
    result = silence_replay.run(36, 2, seed=5)
    assert result["session_days"] == 72 and result["deaths"] == 12
    assert result["false_fail"] == []
    assert result["warn_p95"] <= 30
    assert result["fail_p95"] < 120  # every death FAILs too, later


def test_silence_rhythm__a_day_prior_of_zero_judges_by_todays_writes_alone(settings):
    """SILENCE_DAY_PRIOR = 0: no division by zero; today's writes alone make the belief."""
    settings.OBSERVABILITY_SILENCE_DAY_PRIOR = 0
    unknown_day = SessionHistory(rates=_rates(30))
    assert rules.silence_rhythm(_paired(T0 - timedelta(hours=3)), unknown_day, T0) is None
    usual_day = SessionHistory(rates=_rates(30), pace=USUAL_MORNING)
    verdict = rules.silence_rhythm(_paired(T0 - 30 * MIN), usual_day, T0)
    assert verdict is not None and verdict.status is Status.FAIL
