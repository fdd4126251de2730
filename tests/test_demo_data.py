"""The demo data set: every session state ops must recognise, realistic rows, deterministic."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.utils import timezone

from observability import sessions
from observability.exceptions import BadInput
from observability_demo import demo_data, fakes
from observability_demo.demo_data import SIZES, DemoSize, SessionState

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

SMALL = SIZES["small"]


@pytest.fixture
def now():
    """The reference time the demo rows are written relative to (whole seconds)."""
    return timezone.now().replace(microsecond=0)


@pytest.fixture(scope="module")
def _small_data_set(django_db_setup, django_db_blocker):
    """
    The small demo data set, committed once for this module and emptied after it.

    Seeding takes about a second; the read-only tests below share one copy. Tests that write
    run inside their own transaction, which rolls back to this state.
    """
    now = timezone.now().replace(microsecond=0)
    with django_db_blocker.unblock():
        demo_data.seed_demo_data(SMALL, seed=1, now=now, replace=True)
    yield now
    with django_db_blocker.unblock(), connections["bot"].cursor() as cursor:
        cursor.execute(
            "TRUNCATE whatsapp_auth, whatsapp_keys, companies, clients RESTART IDENTITY"
        )


@pytest.fixture
def empty_bot_tables():
    """Empty bot tables for this test only (the TRUNCATE rolls back with the test)."""
    with connections["bot"].cursor() as cursor:
        cursor.execute("TRUNCATE whatsapp_auth, whatsapp_keys, companies, clients")


@pytest.fixture
def seeded(_small_data_set):
    """The reference time of the small demo data set that is in the test bot database."""
    return _small_data_set


def _rows(sql: str, params=None) -> list[tuple]:
    with connections["bot"].cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def _plan(seeded) -> demo_data.DemoPlan:
    return demo_data.build_plan(SMALL, seed=1, now=seeded)


def test_seed__writes_the_requested_counts(seeded):
    """The small size writes 40 sessions, 40,000 keys and 1,500 clients."""
    session_ids = _rows(
        "SELECT count(*) FROM (SELECT company_id FROM whatsapp_auth "
        "UNION SELECT company_id FROM whatsapp_keys) s"
    )
    assert session_ids == [(SMALL.sessions,)]
    assert _rows("SELECT count(*) FROM whatsapp_keys") == [(SMALL.keys,)]
    assert _rows("SELECT count(*) FROM clients") == [(SMALL.clients,)]


def test_seed__no_healthy_session_shows_warn_or_fail(seeded):
    """Every session planned healthy (weeks old, most keys past expires_at) is judged OK."""
    plan = _plan(seeded)
    judged = {h.session_id: h for h in sessions.list_sessions(now=seeded)}
    healthy = [p.session_id for p in plan.sessions if p.state is SessionState.HEALTHY]
    assert len(healthy) >= SMALL.sessions // 2
    false_alarms = {sid: judged[sid].reasons for sid in healthy if judged[sid].status != "OK"}
    assert false_alarms == {}
    weeks_old = [sid for sid in healthy if judged[sid].facts.last_write]
    assert all(judged[sid].expired_keys > 0 for sid in weeks_old)


def test_seed__every_failure_mode_is_named_with_its_action(seeded):
    """Each failure mode's session carries its rule, with a sentence that says what to do."""
    plan = _plan(seeded)
    judged = {h.session_id: h for h in sessions.list_sessions(now=seeded)}
    shown: dict[str, str] = {}
    for session in plan.sessions:
        expected = demo_data.EXPECTED_RULES.get(session.state)
        if expected is None:
            continue
        health = judged[session.session_id]
        assert expected in health.rules, (session.state, health.reasons)
        assert health.status != "OK"
        shown[expected] = health.reasons[health.rules.index(expected)]
    assert set(shown) == set(demo_data.EXPECTED_RULES.values())
    actions = ("pair ", "keep ", "check ", "restart ", "remove ", "set nextprekeyid")
    for rule, sentence in shown.items():
        assert any(action in sentence.lower() for action in actions), (rule, sentence)


def test_seed__the_store_names_its_findings_with_actions(seeded):
    """The store fails for failing sessions and one login twice, each finding with its action."""
    store = sessions.summarize(sessions.list_sessions(now=seeded))
    causes = {finding.cause for finding in store.findings}
    assert {"failing_sessions", "one_login_twice", "warning_sessions", "orphan_sessions"} <= causes
    assert ("962302", "company_962302") in store.shared_logins
    assert all(finding.action for finding in store.findings)


def test_seed__salon_962302_under_both_spellings_with_one_login(seeded):
    """962302 and company_962302 hold the same creds (the bot copied the session)."""
    assert _rows(
        "SELECT count(DISTINCT creds), count(*) FROM whatsapp_auth "
        "WHERE company_id IN ('962302', 'company_962302')"
    ) == [(1, 2)]
    assert _rows("SELECT count(*) FROM companies WHERE company_id = 962302") == [(1,)]


def test_seed__sessions_follow_a_baileys_life(seeded):
    """QR and pairing-code logins, v7 (812 pre-keys at pairing) and v6 (30, topped up by 5)."""
    plan = _plan(seeded)
    healthy = [p for p in plan.sessions if p.state is SessionState.HEALTHY]
    assert {p.pairing_code for p in healthy} == {True, False}
    assert {p.life.version for p in healthy} == {6, 7}
    registered = dict(_rows("SELECT company_id, creds->>'registered' FROM whatsapp_auth"))
    assert {registered[p.session_id] for p in healthy if not p.pairing_code} == {"false"}
    assert {registered[p.session_id] for p in healthy if p.pairing_code} == {"true"}
    # Pre-key ids stay below nextPreKeyId; v6 sessions were topped up past 30.
    rows = _rows(
        "SELECT a.company_id, (a.creds->>'nextPreKeyId')::int, max(k.key_id::int), count(*) "
        "FROM whatsapp_auth a JOIN whatsapp_keys k USING (company_id) "
        "WHERE k.key_type = 'pre-key' GROUP BY 1, 2"
    )
    by_id = {sid: (next_id, top, count) for sid, next_id, top, count in rows}
    for plan_session in healthy:
        next_id, top, count = by_id[plan_session.session_id]
        assert top < next_id
        if plan_session.life.version == 6:
            assert next_id > 31
        else:
            assert 812 - plan_session.life.new_contacts <= count <= 812
    # myAppStateKeyId names a stored app-state key; app-state versions per collection.
    assert _rows(
        "SELECT count(*) FROM whatsapp_auth a WHERE a.creds ? 'myAppStateKeyId' AND NOT EXISTS "
        "(SELECT 1 FROM whatsapp_keys k WHERE k.company_id = a.company_id "
        "AND k.key_type = 'app-state-sync-key' AND k.key_id = a.creds->>'myAppStateKeyId')"
    ) == [(1,)]  # only the APP_STATE_KEY_MISSING session
    versions = _rows(
        "SELECT DISTINCT key_id FROM whatsapp_keys WHERE key_type = 'app-state-sync-version'"
    )
    assert {key_id for (key_id,) in versions} == set(fakes.APP_STATE_COLLECTIONS)


def test_seed__contacts_some_active_today_some_weeks_old(seeded):
    """Per-contact session rows: some rewritten today, some weeks old; groups and LIDs too."""
    ages = _rows(
        "SELECT count(*) FILTER (WHERE updated_at > %s - interval '1 day'), "
        "count(*) FILTER (WHERE updated_at < %s - interval '14 days') "
        "FROM whatsapp_keys WHERE key_type = 'session'",
        [seeded, seeded],
    )
    today, weeks_old = ages[0]
    assert today > 0 and weeks_old > 0
    assert _rows(
        "SELECT count(*) > 0 FROM whatsapp_keys WHERE key_type = 'sender-key' "
        "AND key_id LIKE '%%@g.us::%%::0'"
    ) == [(True,)]
    assert _rows(
        "SELECT count(*) > 0 FROM whatsapp_keys WHERE key_type = 'lid-mapping' "
        "AND key_id LIKE '%%_reverse'"
    ) == [(True,)]
    assert _rows("SELECT count(*) > 0 FROM whatsapp_keys WHERE key_type = 'identity-key'") == [
        (True,)
    ]


def test_seed__every_key_type_with_the_bots_expiry_rule(seeded):
    """Every key type appears; every row's expires_at is 7 or 14 days after its last write."""
    rows = _rows(
        "SELECT key_type, array_agg(DISTINCT expires_at - updated_at) FROM whatsapp_keys "
        "GROUP BY key_type"
    )
    assert {key_type for key_type, _ in rows} == {*fakes.KEY_TYPES, "identity-key"}
    for key_type, lifetimes in rows:
        written = seeded
        assert lifetimes == [fakes.bot_expires_at(key_type, written) - written], key_type
    assert _rows("SELECT count(*) FROM whatsapp_keys WHERE expires_at IS NULL") == [(0,)]


def test_seed__creds_and_values_use_baileys_buffers(seeded):
    """Binary values are {"type": "Buffer", "data": ...} in creds and key values."""
    assert _rows(
        "SELECT creds->'noiseKey'->'private'->>'type', creds->'me'->>'id' ~ '^79[0-9]{9}:' "
        "FROM whatsapp_auth WHERE company_id = 'company_962302'"
    ) == [("Buffer", True)]
    assert _rows(
        "SELECT count(*) FROM whatsapp_auth WHERE NOT creds ? 'me' AND NOT creds ? 'account'"
    ) == [(1,)]  # the pairing that never finished
    assert _rows(
        "SELECT DISTINCT value->'public'->>'type' FROM whatsapp_keys WHERE key_type = 'pre-key'"
    ) == [("Buffer",)]


def test_seed__clients_have_russian_names_and_both_phone_forms(seeded):
    """Clients carry Cyrillic names, normalized 79XXXXXXXXX phones and typed raw phones."""
    rows = _rows("SELECT name, phone, raw_phone, company_id FROM clients")
    assert all(re.fullmatch(r"[А-ЯЁ][а-яё]+( [А-ЯЁ][а-яё]+)?", name) for name, *_ in rows)
    assert all(re.fullmatch(r"79\d{9}", phone) for _, phone, _, _ in rows)
    raw = [raw for _, _, raw, _ in rows if raw]
    assert any(re.fullmatch(r"\+7 \(\d{3}\) \d{3}-\d{2}-\d{2}", value) for value in raw)
    assert any(re.fullmatch(r"8 \d{3} \d{3} \d{2} \d{2}", value) for value in raw)
    phone, raw_phone = next((p, r) for _, p, r, _ in rows if r and r.startswith("+7 ("))
    assert re.sub(r"\D", "", raw_phone) == phone
    assert sum(1 for *_, salon in rows if salon == 962302) == 500  # a third of 1,500


def test_seed__salons_have_russian_titles_and_random_secrets(seeded):
    """Salons have Russian titles and addresses; every API key and webhook secret differs."""
    rows = _rows("SELECT title, address, api_key, webhook_secret FROM companies")
    assert all(re.search(r"[А-Яа-я]", title) for title, *_ in rows)
    assert all(address.startswith("г. ") for _, address, _, _ in rows)
    assert len({api_key for _, _, api_key, _ in rows}) == len(rows)
    assert len({secret for *_, secret in rows}) == len(rows)


_DIGEST = """
SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (
  SELECT company_id, key_type, key_id, value::text, created_at, updated_at, expires_at
    FROM whatsapp_keys
  UNION ALL SELECT company_id, creds::text, null, null, created_at, updated_at, null
    FROM whatsapp_auth
) t
"""
_DIGEST_OTHERS = (
    "SELECT md5(string_agg(c::text, '|' ORDER BY c.id)) FROM companies c "
    "UNION ALL SELECT md5(string_agg(c::text, '|' ORDER BY c.id)) FROM clients c"
)


def _digest() -> tuple:
    return (_rows(_DIGEST)[0][0], *[row[0] for row in _rows(_DIGEST_OTHERS)])


def test_seed__same_seed_gives_the_same_rows(now):
    """Two runs with one seed and one reference time write identical rows (ids included)."""
    # replace=True restarts the id sequences (other tests' inserts advanced them).
    demo_data.seed_demo_data(SMALL, seed=7, now=now, replace=True)
    first = _digest()
    demo_data.seed_demo_data(SMALL, seed=7, now=now, replace=True)
    assert _digest() == first
    demo_data.seed_demo_data(SMALL, seed=8, now=now, replace=True)
    assert _digest()[0] != first[0]


def test_seed__refuses_a_database_with_data(seeded):
    """Without --replace or --if-empty a non-empty bot database is refused, untouched."""
    with pytest.raises(FileExistsError, match="hold data"):
        demo_data.seed_demo_data(SMALL, seed=2)
    assert demo_data.seed_demo_data(SMALL, seed=2, if_empty=True).skipped
    assert _rows("SELECT count(*) FROM whatsapp_keys") == [(SMALL.keys,)]


def test_seed__replace_empties_the_tables_first(seeded):
    """--replace truncates, so the counts are the new size's, not the sum."""
    size = DemoSize(sessions=14, keys=5_000, clients=30)
    summary = demo_data.seed_demo_data(size, replace=True)
    assert (summary.sessions, summary.keys, summary.clients) == (14, 5_000, 30)
    assert _rows("SELECT count(*), min(id) FROM clients") == [(30, 1)]


def test_build_plan__large_size_adds_up_exactly():
    """The large plan has 1,000 sessions and exactly 1,000,000 keys (no database needed)."""
    plan = demo_data.build_plan(SIZES["large"], seed=1)
    assert len(plan.sessions) == 1_000
    assert sum(sum(s.key_counts.values()) for s in plan.sessions) == 1_000_000
    assert len({s.session_id for s in plan.sessions}) == 1_000
    healthy = [s for s in plan.sessions if s.state is SessionState.HEALTHY]
    v7 = [s for s in healthy if s.life.version == 7]
    assert len(v7) > len(healthy) * 0.7
    assert all(s.key_counts["pre-key"] > 812 - s.life.new_contacts - 1 for s in v7)


@pytest.mark.parametrize("sessions", [13, 14, 40, 333])
def test_build_plan__the_minimum_keys_still_show_every_state(sessions):
    """At the smallest allowed --keys the total is exact and every planned row is written."""
    keys = demo_data.minimum_keys(sessions)
    plan = demo_data.build_plan(DemoSize(sessions=sessions, keys=keys, clients=0), seed=5)
    assert sum(sum(s.key_counts.values()) for s in plan.sessions) == keys
    assert {s.state for s in plan.sessions} == set(SessionState)
    written = {}
    for row in demo_data.key_rows(plan):
        written[row[0]] = written.get(row[0], 0) + 1
    assert written == {s.session_id: sum(s.key_counts.values()) for s in plan.sessions if s.life}


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (DemoSize(sessions=-1, keys=8_000, clients=10), "--sessions must be zero or more"),
        (DemoSize(sessions=40, keys=8_000, clients=-5), "--clients must be zero or more"),
        (DemoSize(sessions=3, keys=8_000, clients=10), "--sessions must be at least 13"),
        (DemoSize(sessions=10**6, keys=10**9, clients=10), "--sessions must be at most 100,000"),
        (DemoSize(sessions=40, keys=100, clients=10), "--keys must be at least"),
    ],
)
def test_demo_size__bad_sizes_are_refused(size, message):
    """Negative or too small sizes are refused with a message naming the option."""
    with pytest.raises(BadInput, match=re.escape(message)):
        demo_data.build_plan(size)


@pytest.mark.usefixtures("empty_bot_tables")
def test_seed_demo_data_command__writes_and_reports():
    """The command writes the small set and says how much it wrote."""
    out = io.StringIO()
    call_command("seed_demo_data", "--seed", "3", stdout=out)
    assert "40 WhatsApp sessions and 40,000 keys" in out.getvalue()


def test_seed_demo_data_command__if_empty_skips_quietly(seeded):
    """--if-empty on a database with data succeeds and writes nothing."""
    out = io.StringIO()
    call_command("seed_demo_data", "--if-empty", stdout=out)
    assert "nothing written" in out.getvalue()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sessions", "-2"], "--sessions must be zero or more"),
        (["--keys", "-1"], "--keys must be zero or more"),
        (["--database", "nope"], "Unknown database alias 'nope'"),
    ],
)
def test_seed_demo_data_command__bad_input_is_a_usage_error(arguments, message):
    """Bad numbers and aliases fail with exit code 2 and a message naming the problem."""
    with pytest.raises(CommandError, match=re.escape(message)) as failure:
        call_command("seed_demo_data", *arguments)
    assert failure.value.returncode == 2


def test_seed_demo_data_command__unknown_size_is_refused():
    """An unknown --size lists the valid ones."""
    with pytest.raises(CommandError, match="invalid choice: 'huge'"):
        call_command("seed_demo_data", "--size", "huge")


def test_seed_demo_data_command__refuses_data_without_replace(seeded):
    """A database with data is refused with a hint at --replace and --if-empty."""
    with pytest.raises(CommandError, match="--replace") as failure:
        call_command("seed_demo_data")
    assert failure.value.returncode == 2


def test_seed__keeps_every_index_exactly_as_it_was(now):
    """Indexes dropped for the bulk load come back with the same names and definitions."""
    indexes = (
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) ORDER BY 1",
        [["whatsapp_keys", "clients", "whatsapp_auth", "companies"]],
    )
    before = _rows(*indexes)
    demo_data.seed_demo_data(SMALL, now=now, replace=True)
    assert _rows(*indexes) == before
    assert len(before) == 19
