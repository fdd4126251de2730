"""Fuzz pass: malformed input to every command and URL gets a clear error, no 500, no write."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observability import key_types, session_ids
from observability.cleanup import selection
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure reproduces
    database=None,  # and nothing is written to the working tree
)

#: Salon ids a person (or an attacker) might type, beyond what st.text() finds by itself.
NASTY_IDS = [
    "",
    " ",
    "company_",
    "company_0",
    "company_-1",
    "COMPANY_962302",
    "0",
    "-1",
    "-962302",
    "007",
    "9" * 30,
    str(2**31),
    str(2**63),
    "1e6",
    "962302.0",
    "962 302",
    "９６２３０２",  # full-width digits
    "٩٦٢٣٠٢",  # Arabic-Indic digits
    "962302\x00",
    "\x00",
    "' OR 1=1 --",
    "1; DROP TABLE whatsapp_keys; --",
    "962302' UNION SELECT creds FROM whatsapp_auth --",
    "%",
    "_",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "company_962302company_962302",
    "x" * 5000,
]

salon_ids = st.one_of(
    st.sampled_from(NASTY_IDS),
    st.text(max_size=60),
    st.integers(max_value=0).map(str),
    st.integers(min_value=2**31).map(str),
)


def _unparseable(value: str) -> bool:
    return session_ids.describe(value.strip()).salon_id is None


#: Any text that is not a salon id the bot could store, plus numbers too big to be one.
bad_salon_ids = salon_ids.filter(_unparseable)


#: Sizes that are not a whole number in range.
def _is_int(text: str) -> bool:
    # Python's int() (argparse's type) also takes "1_0", " 10 " and non-ASCII digits: those
    # are numbers, not junk.
    try:
        int(text)
    except ValueError:
        return False
    return True


not_integers = st.one_of(
    st.sampled_from(["", "abc", "1.5", "1e3", "0x10", "NaN", "inf", "10 000", "--1", "1__0"]),
    st.text(max_size=12).filter(lambda s: not _is_int(s)),
)
bad_batch_sizes = st.one_of(
    st.integers(max_value=0).map(str),
    st.integers(min_value=selection.MAX_BATCH_SIZE + 1).map(str),
    not_integers,
)
bad_day_counts = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e300", "1e6", "3000000", "-0.5", "-1"]),
    st.floats(max_value=-1e-9, allow_nan=False).map(repr),
    st.floats(min_value=1e6, allow_infinity=True).map(repr),
    not_integers.filter(lambda s: not _is_float(s)),
)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _known_key_type(value: str) -> bool:
    value = value.strip()
    return key_types.is_known(value)


bad_key_types = st.one_of(
    st.sampled_from(["", " ", "prekey", "PRE-KEY", "session\x00", "' OR 1=1 --", "%", "*"]),
    st.text(max_size=40),
).filter(lambda s: not _known_key_type(s))


def _row_counts() -> dict[str, int]:
    """Rows of every table a command or page could write to, in both databases."""
    counts = {}
    for alias, tables in (
        ("bot", ("whatsapp_auth", "whatsapp_keys", "companies", "clients")),
        (
            "default",
            (
                "observability_cleanuprun",
                "django_q_schedule",
                "django_q_ormq",
                "django_q_task",
                "auth_user",
            ),
        ),
    ):
        with connections[alias].cursor() as cursor:
            for table in tables:
                cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 (fixed names)
                counts[f"{alias}.{table}"] = cursor.fetchone()[0]
    return counts


@pytest.fixture
def seeded(db):
    """A little of everything, so a command that did write something would show it."""
    factories.make_company(962302, title="Salon")
    factories.make_auth("962302")
    factories.make_keys("962302", "session", 3)
    factories.make_keys("company_962302", "pre-key", 2)
    factories.make_client(962302, 1)


def _assert_refused(capsys, *args: str) -> CommandError:
    """Run a command in process: it must fail with a clear CommandError and no traceback."""
    with pytest.raises(CommandError) as failure:
        call_command(*args)
    error = failure.value
    if str(error).startswith("Error: "):
        # argparse refused it; in process Django raises CommandError (exit 1) where the
        # command line exits 2 (usage), as test_commands__argparse_errors_exit_2 checks.
        error.returncode = 2
    assert error.returncode != 0, args
    message = str(error)
    assert message.strip(), args
    assert "Traceback" not in message
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return error


# --- Management commands ----------------------------------------------------------------------

CLEANUP_COMMANDS = ("cleanup_expired_keys", "cleanup_orphan_keys")


@FUZZ
@given(value=bad_salon_ids, command=st.sampled_from((*CLEANUP_COMMANDS, "cleanup_duplicates")))
def test_cleanup_commands__malformed_salon_is_refused(seeded, capsys, value, command):
    """A salon id that is not one: exit 2 with "not a salon id", nothing written or recorded."""
    before = _row_counts()
    error = _assert_refused(capsys, command, f"--salon={value}", "--apply")
    assert error.returncode == 2
    assert _row_counts() == before


@FUZZ
@given(value=bad_key_types, command=st.sampled_from(CLEANUP_COMMANDS))
def test_cleanup_commands__unknown_key_type_is_refused(seeded, capsys, value, command):
    """A key type the bot never writes: exit 2 naming the valid types, nothing written."""
    before = _row_counts()
    error = _assert_refused(capsys, command, f"--key-type={value}", "--apply")
    assert error.returncode == 2
    assert "Unknown key type" in str(error)
    assert _row_counts() == before


@FUZZ
@given(value=bad_batch_sizes, command=st.sampled_from(CLEANUP_COMMANDS))
def test_cleanup_commands__bad_batch_size_is_refused(seeded, capsys, value, command):
    """Zero, negative, huge or non-numeric batch sizes: exit 2, nothing written."""
    before = _row_counts()
    error = _assert_refused(capsys, command, f"--batch-size={value}", "--apply")
    assert error.returncode == 2
    assert _row_counts() == before


@FUZZ
@given(value=bad_day_counts)
def test_cleanup_orphan_keys__bad_grace_days_is_refused(seeded, capsys, value):
    """Negative, NaN, infinite, absurdly large or non-numeric days: exit 2, nothing written."""
    before = _row_counts()
    error = _assert_refused(capsys, "cleanup_orphan_keys", f"--grace-days={value}", "--apply")
    assert error.returncode == 2
    assert _row_counts() == before


@FUZZ
@given(value=bad_day_counts)
def test_cleanup_duplicates__bad_min_idle_hours_is_refused(seeded, capsys, value):
    """--min-idle-hours that is negative, NaN, infinite, huge or not a number: exit 2."""
    before = _row_counts()
    error = _assert_refused(capsys, "cleanup_duplicates", f"--min-idle-hours={value}", "--apply")
    assert error.returncode == 2
    assert _row_counts() == before


@FUZZ
@given(value=st.one_of(st.sampled_from(NASTY_IDS), st.text(max_size=40)))
def test_cleanup_duplicates__restore_of_a_missing_or_bad_file_is_refused(seeded, capsys, value):
    """--restore of a path that is not a backup file: a clear error, nothing written."""
    before = _row_counts()
    _assert_refused(capsys, "cleanup_duplicates", f"--restore={value}/missing.jsonl.gz", "--apply")
    assert _row_counts() == before


_SIZE_OPTIONS = ("--sessions", "--keys", "--clients")
bad_sizes = st.one_of(
    st.integers(max_value=-1).map(str),
    st.integers(min_value=10**8).map(str),
    not_integers,
)


@FUZZ
@given(option=st.sampled_from(_SIZE_OPTIONS), value=bad_sizes)
def test_seed_demo_data__bad_size_is_refused(seeded, capsys, option, value):
    """Negative, huge or non-numeric sizes: exit 2 before a single row is written."""
    before = _row_counts()
    error = _assert_refused(capsys, "seed_demo_data", f"{option}={value}", "--replace")
    assert error.returncode == 2
    assert _row_counts() == before


@FUZZ
@given(
    args=st.one_of(
        not_integers.map(lambda v: [f"--seed={v}"]),
        st.text(max_size=20)
        .filter(lambda v: v not in ("small", "large"))
        .map(lambda v: [f"--size={v}"]),
        st.just(["--replace", "--if-empty"]),
    )
)
def test_seed_demo_data__bad_seed_size_or_flags_are_refused(seeded, capsys, args):
    """A non-numeric seed, an unknown named size, or --replace with --if-empty: exit 2."""
    before = _row_counts()
    error = _assert_refused(capsys, "seed_demo_data", *args)
    assert error.returncode == 2
    assert _row_counts() == before


@FUZZ
@given(
    command=st.sampled_from(("seed_demo_data", "create_bot_schema", "check_bot_schema")),
    value=st.one_of(st.sampled_from(["", "Bot", "bot ", "default2", "' OR 1=1"]), st.text()),
)
def test_commands__unknown_database_alias_is_refused(seeded, capsys, command, value):
    """--database naming no configured alias: exit 2 listing the aliases, nothing written."""
    if value in ("bot", "default"):
        return
    before = _row_counts()
    args = [command, f"--database={value}"]
    if command != "check_bot_schema":
        args.append("--replace")
    error = _assert_refused(capsys, *args)
    assert error.returncode == 2
    assert _row_counts() == before


@FUZZ
@given(value=st.one_of(st.sampled_from(["", "pg_catalog'--", "\x00", "x" * 200]), st.text()))
def test_check_bot_schema__unknown_schema_reports_drift_not_a_crash(seeded, capsys, value):
    """A schema that is not there: drift reported (non-zero exit), never a traceback."""
    before = _row_counts()
    _assert_refused(capsys, "check_bot_schema", f"--schema={value}")
    assert _row_counts() == before


# --- URLs -------------------------------------------------------------------------------------

CHANGELISTS = (
    "/admin/observability/sessionstate/",
    "/admin/observability/company/",
    "/admin/observability/client/",
    "/admin/observability/cleanuprun/",
)
CHANGELIST_PARAMS = (
    "q",
    "o",
    "p",
    "status",
    "spelling",
    "duplicate",
    "platform",
    "salon",
    "loyalty",
    "segment",
    "blacklisted__exact",
    "whatsapp_enabled__exact",
    "outcome__exact",
    "operation__exact",
    "dry_run__exact",
    "all",
    "_to_field",
    "e",
)
junk = st.one_of(
    st.sampled_from(NASTY_IDS),
    st.text(max_size=80),
    st.integers().map(str),
    st.sampled_from(["-1", "0", "1.5", "99999999999999999999", "1.-2", "-", "--", "..."]),
)


def _assert_answered_cleanly(response, url: str) -> None:
    assert response.status_code < 500, (url, response.status_code)
    body = response.content.decode(errors="replace")
    assert "Traceback" not in body, url
    assert 'id="traceback"' not in body, url


@pytest.fixture
def staff_client(client, django_user_model):
    """A logged-in staff superuser; a 500 is returned as a response, not raised."""
    user = django_user_model.objects.create_superuser("fuzz", "fuzz@example.com", "x")
    client.force_login(user)
    client.raise_request_exception = False
    return client


@FUZZ
@given(
    url=st.sampled_from(CHANGELISTS),
    params=st.dictionaries(st.sampled_from(CHANGELIST_PARAMS), junk, min_size=1, max_size=4),
)
def test_admin_changelists__junk_query_strings_never_500(seeded, staff_client, url, params):
    """Search, ordering, paging and filters with junk values: a page or a 4xx, never a 500."""
    before = _row_counts()
    response = staff_client.get(url, params)
    _assert_answered_cleanly(response, f"{url}?{params}")
    assert _row_counts() == before


@FUZZ
@given(
    session=salon_ids,
    page=st.sampled_from(["change", "keys", "history", "delete"]),
    params=st.dictionaries(st.sampled_from(["type", "expired", "p"]), junk, max_size=3),
)
def test_session_pages__junk_session_ids_and_params_never_500(
    seeded, staff_client, session, page, params
):
    """Session page, key browser: junk ids, key types, pages give 400/404, never a 500."""
    suffix = {"change": "change/", "keys": "keys/", "history": "history/", "delete": "delete/"}
    url = f"/admin/observability/sessionstate/{quote(session)}/{suffix[page]}"
    before = _row_counts()
    response = staff_client.get(url, params)
    _assert_answered_cleanly(response, url)
    assert _row_counts() == before


@FUZZ
@given(
    model=st.sampled_from(("company", "client", "cleanuprun")),
    object_id=salon_ids,
)
def test_admin_object_pages__junk_ids_never_500(seeded, staff_client, model, object_id):
    """Salon, client and cleanup-run pages with junk ids: 302/404, never a 500."""
    url = f"/admin/observability/{model}/{quote(object_id)}/change/"
    response = staff_client.get(url)
    _assert_answered_cleanly(response, url)


@FUZZ
@given(
    group=st.sampled_from(["", "db/", "pool/", "connections/", "whatsapp/", "queue/"]),
    params=st.dictionaries(st.sampled_from(["format", "group", "q"]), junk, max_size=2),
    accept=st.one_of(st.none(), st.sampled_from(["*/*", "text/html", "junk/junk;q=x", "\x7f"])),
)
def test_health__junk_format_and_accept_never_500_from_the_view(client, group, params, accept):
    """Health with junk ?format= or Accept: an answer (200/500 from checks, 4xx), no traceback."""
    client.raise_request_exception = False
    headers = {"Accept": accept} if accept is not None else {}
    response = client.get(f"/health/{group}", params, headers=headers)
    body = response.content.decode(errors="replace")
    assert "Traceback" not in body
    # The health view answers 500 only for a failing check, and then in its own formats.
    if response.status_code == 500:
        assert response["Content-Type"].split(";")[0] in (
            "application/json",
            "text/plain",
            "text/html",
            "application/openmetrics-text",
            "application/atom+xml",
            "application/rss+xml",
        )
        assert "Server Error" not in body


def test_admin_pages__every_nasty_value_in_every_parameter(seeded, staff_client):
    """Each nasty value in every parameter of every changelist and of the key browser at once."""
    before = _row_counts()
    keys_url = "/admin/observability/sessionstate/962302/keys/"
    for value in NASTY_IDS:
        for url in CHANGELISTS:
            params = dict.fromkeys(CHANGELIST_PARAMS, value)
            _assert_answered_cleanly(staff_client.get(url, params), f"{url} {value!r}")
        for name in ("type", "expired", "p"):
            response = staff_client.get(keys_url, {name: value})
            _assert_answered_cleanly(response, f"{name}={value!r}")
    assert _row_counts() == before
