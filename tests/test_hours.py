"""hours.py: BUSINESS_HOURS parsing, BOT_ACTIVE at a given instant, CLOSED_MESSAGE once per chat per day; config validation."""

from datetime import datetime, timedelta, timezone

import pytest

import hours
from config import SettingsError

UTC = timezone.utc
# 2026-12-02 is a Wednesday; São Paulo is UTC-3 all year (no daylight saving since 2019).
WED_10_SP = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)
WED_19_SP = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
SAT_11_SP = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
SAT_13_SP = datetime(2026, 12, 5, 16, 0, tzinfo=UTC)
SUN_10_SP = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
SHOP = "mon-fri 08:00-18:00, sat 08:00-12:00"


def test_english_and_portuguese_day_names_give_the_same_schedule():
    english = hours.parse_business_hours("mon-fri 08:00-18:00, sat 08:00-12:00")
    assert hours.parse_business_hours("seg-sex 08:00-18:00, sáb 08:00-12:00") == english
    assert hours.parse_business_hours("SEG-SEX 8h00-18h00; sab 08:00-12:00") == english
    assert english == {d: [(480, 1080)] for d in range(5)} | {5: [(480, 720)]}


def test_day_ranges_wrap_and_a_day_may_have_two_periods():
    assert sorted(hours.parse_business_hours("sex-seg 10:00-14:00")) == [0, 4, 5, 6]
    assert hours.parse_business_hours("ter 08:00-12:00, ter 14:00-24:00") == {1: [(480, 720), (840, 1440)]}
    assert hours.parse_business_hours("") == {}


@pytest.mark.parametrize("text, words", [
    ("mon-fri", "não entendi 'mon-fri'"),
    ("funday 08:00-18:00", "dia desconhecido 'funday'"),
    ("mon 18:00-08:00", "termina antes de começar"),
    ("mon 08:00-25:00", "não é uma hora do dia"),
    ("mon 08:61-09:00", "não é uma hora do dia"),
    ("mon 8-18", "não entendi"),
])
def test_malformed_hours_say_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=words):
        hours.parse_business_hours(text)


@pytest.mark.parametrize("active, instant, expected", [
    ("always", WED_10_SP, True), ("always", WED_19_SP, True),
    ("outside_business_hours", WED_10_SP, False), ("outside_business_hours", WED_19_SP, True),
    ("outside_business_hours", SAT_11_SP, False), ("outside_business_hours", SAT_13_SP, True),
    ("outside_business_hours", SUN_10_SP, True),
    ("during_business_hours", WED_10_SP, True), ("during_business_hours", SUN_10_SP, False),
    ("during_business_hours", SAT_13_SP, False),
])
def test_bot_active_follows_the_shop_clock_not_utc(make_settings, active, instant, expected):
    settings = make_settings(BUSINESS_HOURS=SHOP, BOT_ACTIVE=active)
    assert hours.bot_active(settings, instant) is expected


def test_the_edges_of_a_period_and_another_time_zone(make_settings):
    settings = make_settings(BUSINESS_HOURS="seg-sex 08:00-18:00", BOT_ACTIVE="during_business_hours")
    opening = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)  # 08:00 in São Paulo
    assert hours.bot_active(settings, opening)
    assert not hours.bot_active(settings, opening - timedelta(minutes=1))
    assert not hours.bot_active(settings, opening + timedelta(hours=10))  # 18:00: closed
    manaus = make_settings(BUSINESS_HOURS="seg-sex 08:00-18:00", BOT_ACTIVE="during_business_hours",
                           BUSINESS_TIMEZONE="America/Manaus")  # UTC-4
    assert not hours.bot_active(manaus, opening)
    assert hours.bot_active(manaus, opening + timedelta(hours=1))


def test_closed_message_at_most_once_per_chat_per_local_day(make_settings, fake_redis):
    settings = make_settings(BUSINESS_HOURS=SHOP, BOT_ACTIVE="during_business_hours", CLOSED_MESSAGE="Estamos fechados.")
    night = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)  # Wednesday 22:00 in São Paulo: still Wednesday there
    assert hours.closed_notice_due(fake_redis, "shop|a", settings, night) is True
    assert hours.closed_notice_due(fake_redis, "shop|a", settings, night + timedelta(hours=1)) is False
    assert hours.closed_notice_due(fake_redis, "shop|b", settings, night) is True  # another chat
    key, = [k for k in fake_redis.keys() if b"shop|a" in k]
    assert 0 < fake_redis.ttl(key) <= 2 * 3600  # gone at midnight in São Paulo
    assert hours.closed_notice_due(fake_redis, "shop|a", settings, night + timedelta(hours=3)) is True  # Thursday


def test_no_closed_message_set_means_silence(make_settings, fake_redis):
    settings = make_settings(BUSINESS_HOURS=SHOP, BOT_ACTIVE="during_business_hours")
    assert hours.closed_notice_due(fake_redis, "shop|a", settings, WED_19_SP) is False
    assert fake_redis.keys() == []


@pytest.mark.parametrize("env, name", [
    ({"BUSINESS_HOURS": "mon-fri 8-18"}, "BUSINESS_HOURS"),
    ({"BUSINESS_TIMEZONE": "Brasil/Fortaleza"}, "BUSINESS_TIMEZONE"),
    ({"BOT_ACTIVE": "sometimes", "BUSINESS_HOURS": SHOP}, "BOT_ACTIVE"),
    ({"BOT_ACTIVE": "outside_business_hours"}, "BUSINESS_HOURS"),
    ({"GEMINI_MAX_OUTPUT_TOKENS": "0"}, "GEMINI_MAX_OUTPUT_TOKENS"),
    ({"GEMINI_THINKING_BUDGET": "-2"}, "GEMINI_THINKING_BUDGET"),
])
def test_bad_settings_stop_start_up_naming_the_setting(make_settings, env, name):
    with pytest.raises(SettingsError, match=f"^{name}"):
        make_settings(**env)


def test_defaults_and_parsed_values(make_settings):
    settings = make_settings()
    assert (settings.bot_active, settings.business_timezone, settings.closed_message, settings.owner_number) == (
        "always", "America/Sao_Paulo", "", ())
    assert (settings.gemini_max_output_tokens, settings.gemini_thinking_budget) == (1024, 0)
    settings = make_settings(BOT_ACTIVE=" Outside_Business_Hours ", BUSINESS_HOURS=SHOP,
                             OWNER_NUMBER="+55 11 99999-4321, 5511999990002")
    assert settings.bot_active == "outside_business_hours"
    assert settings.owner_number == ("+55 11 99999-4321", "5511999990002")
