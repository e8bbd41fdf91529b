"""GEMINI_MAX_OUTPUT_TOKENS and GEMINI_THINKING_BUDGET reach Gemini's request body through the real SDK."""

import pytest

import ai_service


def camel(config):
    """google-genai 3.x copies ThinkingConfig's snake_case names into the body (`thinking_budget`); the API's
    proto JSON reads both spellings, so compare them as one."""
    def name(key):
        head, *rest = key.split("_")
        return head + "".join(word.title() for word in rest)
    return {name(k): camel(v) if isinstance(v, dict) else v for k, v in config.items()}


@pytest.mark.parametrize("env, expected", [
    ({}, {"maxOutputTokens": 1024, "thinkingConfig": {"thinkingBudget": 0}}),
    ({"GEMINI_MAX_OUTPUT_TOKENS": "300", "GEMINI_THINKING_BUDGET": "512"},
     {"maxOutputTokens": 300, "thinkingConfig": {"thinkingBudget": 512}}),
    ({"GEMINI_THINKING_BUDGET": "-1"}, {"maxOutputTokens": 1024}),  # the model's own default: nothing sent
])
def test_generation_config_carries_the_limits(make_settings, gemini, env, expected):
    settings = make_settings(**env)
    gemini.reply_with("Oi!")
    assert ai_service.generate_reply(ai_service.make_client(settings), settings, [], "oi", "Seja breve.") == "Oi!"
    assert camel(gemini.requests[-1]["body"]["generationConfig"]) == expected


def test_each_reply_logs_its_token_counts(make_settings, gemini, caplog):
    settings = make_settings()
    gemini.reply_with("Temos sim, de 39 a 44.")
    with caplog.at_level("INFO", logger="ai_service"):
        ai_service.generate_reply(ai_service.make_client(settings), settings, [], "tem tênis 42?", "Seja breve.")
    # the fake counts words: 2 of the system instruction and 3 of the message
    assert "Gemini tokens: prompt 5, answer 6, thinking 0, cached 0" in caplog.text
