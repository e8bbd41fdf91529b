"""gemini_cache.py against FakeGemini's cachedContents (the real google-genai SDK) and fakeredis: when a cache is
made, that one process makes it, renewal at half its life, a text too small or a failure leaving it inline."""

import json
import time

import pytest

import ai_service
import gemini_cache
from config import SettingsError
from conftest import wait_until

LONG = " ".join(f"palavra{n}" for n in range(1500))  # 1,500 words (the fake's tokens), about 14,000 characters


@pytest.fixture
def settings(make_settings):
    return make_settings(GEMINI_CACHE_TTL_MINUTES=60)


@pytest.fixture
def client(settings):
    return ai_service.make_client(settings)


def record(redis, settings, text):
    raw = redis.get(gemini_cache.keys(gemini_cache.digest(settings, text))["record"])
    return json.loads(raw) if raw else None


@pytest.mark.parametrize("model, env, minimum", [
    ("gemini-flash-latest", "0", 1024), ("gemini-2.5-flash", "0", 1024), ("gemini-2.5-pro", "0", 4096),
    ("gemini-3-pro-preview", "0", 4096), ("gemini-flash-latest", "2048", 2048), ("gemini-flash-latest", "-1", -1),
])
def test_the_minimum_follows_the_model_unless_set(make_settings, model, env, minimum):
    settings = make_settings(GEMINI_MODEL=model, GEMINI_CACHE_MIN_TOKENS=env)
    assert gemini_cache.min_tokens(settings) == minimum
    assert gemini_cache.worth_caching(settings, "x" * 4 * 4096) is (minimum != -1)
    assert gemini_cache.worth_caching(settings, "x" * 4 * 1000) is False


def test_below_the_minimum_nothing_is_asked_of_gemini(settings, client, fake_redis, gemini):
    assert gemini_cache.lookup(fake_redis, client, settings, "Você é a atendente. " * 50) is None
    assert gemini_cache.prepare(fake_redis, client, settings, "Você é a atendente. " * 50) is None
    assert gemini.cache_calls == []


def test_the_first_lookup_goes_inline_and_makes_the_cache_beside_it(settings, client, fake_redis, gemini):
    assert gemini_cache.lookup(fake_redis, client, settings, LONG, "shop") is None  # never waits
    wait_until(lambda: record(fake_redis, settings, LONG), timeout=10, message="the cache's record")
    name = gemini_cache.lookup(fake_redis, client, settings, LONG, "shop")
    assert name == next(iter(gemini.caches)) and len(gemini.cache_creations()) == 1
    cache = gemini.caches[name]
    assert cache["systemInstruction"]["parts"][0]["text"] == LONG and cache["model"] == "models/gemini-flash-latest"
    assert 3590 < cache["expires"] - time.time() <= 3600
    ttl = fake_redis.ttl(gemini_cache.keys(gemini_cache.digest(settings, LONG))["record"])
    assert 3500 < ttl <= 3600  # Redis forgets the record when Gemini forgets the cache


def test_a_process_finding_the_lock_taken_makes_nothing(settings, client, fake_redis, gemini):
    fake_redis.set(gemini_cache.keys(gemini_cache.digest(settings, LONG))["lock"], "another-process")
    assert gemini_cache.prepare(fake_redis, client, settings, LONG, wait=True) is None
    assert gemini_cache.lookup(fake_redis, client, settings, LONG) is None
    time.sleep(0.3)
    assert gemini.cache_calls == []


def test_a_cache_past_half_its_life_is_renewed_not_made_again(settings, client, fake_redis, gemini):
    gemini_cache.prepare(fake_redis, client, settings, LONG, wait=True)
    key = gemini_cache.keys(gemini_cache.digest(settings, LONG))["record"]
    stored = record(fake_redis, settings, LONG)
    fake_redis.set(key, json.dumps({**stored, "expires": time.time() + 600}))  # 10 of 60 minutes left
    assert gemini_cache.lookup(fake_redis, client, settings, LONG) == stored["name"]  # still named meanwhile
    wait_until(lambda: [c for c in gemini.cache_calls if c["method"] == "PATCH"], timeout=10, message="the renewal")
    wait_until(lambda: record(fake_redis, settings, LONG)["expires"] > time.time() + 3000, timeout=10,
               message="the renewed expiry")
    assert gemini.cache_calls[-1]["body"] == {"ttl": "3600s"} and len(gemini.cache_creations()) == 1


def test_an_edit_gets_its_own_cache_and_the_old_one_is_deleted(settings, client, fake_redis, gemini):
    gemini_cache.prepare(fake_redis, client, settings, LONG, "shop", wait=True)
    old = record(fake_redis, settings, LONG)["name"]
    gemini_cache.prepare(fake_redis, client, settings, LONG + " novo", "shop", wait=True)
    assert list(gemini.caches) == [record(fake_redis, settings, LONG + " novo")["name"]]
    assert old not in gemini.caches and record(fake_redis, settings, LONG) is None


def test_a_text_gemini_finds_too_small_stays_inline_for_a_day(settings, client, fake_redis, gemini):
    gemini.min_cache_tokens = 100_000  # the real count below the model's minimum, the estimate above it
    gemini_cache.prepare(fake_redis, client, settings, LONG, wait=True)
    skip = gemini_cache.keys(gemini_cache.digest(settings, LONG))["skip"]
    assert gemini.cache_calls[-1]["status"] == 400 and fake_redis.ttl(skip) > 86000
    assert gemini_cache.lookup(fake_redis, client, settings, LONG) is None
    time.sleep(0.3)
    assert len(gemini.cache_calls) == 1


def test_a_failed_creation_is_tried_again_a_minute_later(settings, client, fake_redis, gemini):
    gemini.fail_cache_next(503)
    gemini_cache.prepare(fake_redis, client, settings, LONG, wait=True)
    skip = gemini_cache.keys(gemini_cache.digest(settings, LONG))["skip"]
    assert 0 < fake_redis.ttl(skip) <= gemini_cache.RETRY_SECONDS
    assert gemini_cache.lookup(fake_redis, client, settings, LONG) is None and len(gemini.cache_calls) == 1
    fake_redis.delete(skip)  # a minute later
    gemini_cache.lookup(fake_redis, client, settings, LONG)
    wait_until(lambda: record(fake_redis, settings, LONG), timeout=10, message="the cache made on the next try")


def test_a_reply_through_the_cache_sends_the_conversation_alone(settings, client, fake_redis, gemini):
    gemini_cache.prepare(fake_redis, client, settings, LONG, wait=True)
    gemini.reply_with("Oi!")
    usage = {}
    assert gemini_cache.generate_reply(client, fake_redis, settings, [], "oi", LONG, usage=usage) == "Oi!"
    body = gemini.requests[-1]["body"]
    assert body["cachedContent"] == record(fake_redis, settings, LONG)["name"] and "systemInstruction" not in body
    assert usage["cached_content_token_count"] == 1500 and usage["prompt_token_count"] == 1501


@pytest.mark.parametrize("env, named", [
    ({"GEMINI_CACHE_MIN_TOKENS": "-2"}, "GEMINI_CACHE_MIN_TOKENS=0"),
    ({"GEMINI_CACHE_TTL_MINUTES": "0"}, "GEMINI_CACHE_TTL_MINUTES=60"),
    ({"GEMINI_CACHE_TTL_MINUTES": "20000"}, "GEMINI_CACHE_TTL_MINUTES=60"),
])
def test_a_wrong_cache_setting_stops_start_up_naming_it_with_an_example(make_settings, env, named):
    with pytest.raises(SettingsError, match=f"^{named.split('=')[0]}: precisa ser .*Exemplo: {named}$"):
        make_settings(**env)
