"""Voice replies (voice.py) on real processes with the fakes: a voice note in, a voice note out through
Evolution's sendWhatsAppAudio with the fake TTS model's audio; text whenever speech is not possible."""

import io
import time
import wave

import pytest

import buffer
import memory
import config
from conftest import CUSTOMER, INSTANCE, load_payload, text_message, wait_until
from fakes import tts_voice_name

CID = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")
PCM = bytes(range(256)) * 40  # 10,240 bytes: 5,120 samples of 16-bit PCM from the fake TTS model
ANSWER = "Abrimos às 8h.\n\nAté sábado!"


def voice_note(message_id="VOICE1"):
    body = load_payload("68_v2_3_7_audio_ptt_no_base64_long_bytes_objects.json")
    body["instance"] = INSTANCE
    body["data"]["key"]["id"] = message_id
    body["data"]["key"]["remoteJid"] = f"{CUSTOMER}@s.whatsapp.net"
    body["data"]["messageTimestamp"] = int(time.time())
    return body


@pytest.fixture
def voice_stack(start_stack, gemini, evolution):
    gemini.reply_with(ANSWER)
    gemini.speak_with(PCM)
    return start_stack(voice_replies="when_customer_sends_audio", voice_name="Kore")


def test_a_voice_note_in_gets_a_voice_note_out(voice_stack, gemini, evolution):
    body = voice_note()
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", b"OggS\x00\x02fake-opus")
    voice_stack.post(body)
    wait_until(lambda: evolution.audios, timeout=20, message="the voice note")
    time.sleep(1.5)
    assert evolution.sent_texts() == []  # the spoken answer replaces the text, parts and all
    [sent] = evolution.audios
    assert (sent["instance"], sent["number"]) == (INSTANCE, CUSTOMER)
    with wave.open(io.BytesIO(sent["audio"])) as wav:  # the fake TTS model's PCM, wrapped as WAV
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        assert wav.readframes(wav.getnframes()) == PCM
    [speech] = gemini.speech_requests()
    assert speech["model"] == "gemini-3.8-flash-lite-tts"
    assert speech["body"]["contents"][-1]["parts"][0]["text"] == ANSWER
    assert speech["body"]["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert tts_voice_name(speech["body"]) == "Kore"
    redis = voice_stack.redis.client()  # the panel and history keep the text
    assert [m["text"] for m in memory.thread(redis, CID) if m["from"] == "bot"] == [ANSWER]
    assert memory.load_history(redis, CID)[-1] == {"role": "model", "text": ANSWER}
    assert int(redis.get(f"wa:gemini_calls:{int(time.time() // 3600)}")) == 2  # the answer and its speech


def test_text_goes_out_when_speech_fails(voice_stack, gemini, evolution):
    gemini.fail_speech_next(500)
    body = voice_note("VOICE2")
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", b"OggS\x00\x02fake-opus")
    voice_stack.post(body)
    wait_until(lambda: len(evolution.sent_texts()) == 2, timeout=20, message="the text parts")
    assert [text for _, _, text in evolution.sent_texts()] == ANSWER.split("\n\n")
    assert evolution.audios == [] and len(gemini.speech_requests()) == 1


def test_a_text_message_gets_text_when_only_voice_notes_are_answered_by_voice(voice_stack, gemini, evolution):
    voice_stack.post(text_message("Que horas abrem?", "VOICE3"))
    wait_until(lambda: len(evolution.sent_texts()) == 2, timeout=20, message="the text parts")
    time.sleep(1)
    assert evolution.audios == [] and gemini.speech_requests() == []


def test_an_answer_above_voice_max_chars_goes_out_as_text(start_stack, gemini, evolution):
    gemini.reply_with(ANSWER)
    stack = start_stack(voice_replies="always", voice_max_chars=10)
    stack.post(text_message("Que horas abrem?", "VOICE4"))
    wait_until(lambda: len(evolution.sent_texts()) == 2, timeout=20, message="the text parts")
    time.sleep(1)
    assert evolution.audios == [] and gemini.speech_requests() == []


@pytest.mark.parametrize("env, named", [
    ({"VOICE_REPLIES": "sometimes"}, "VOICE_REPLIES: precisa ser 'off', 'when_customer_sends_audio', 'always'.*Exemplo: VOICE_REPLIES="),
    ({"VOICE_MAX_CHARS": "0"}, "VOICE_MAX_CHARS: precisa ser maior que zero.*Exemplo: VOICE_MAX_CHARS=600"),
    ({"VOICE_REPLIES": "always", "VOICE_NAME": " "}, "VOICE_NAME: não pode ficar vazio.*Exemplo: VOICE_NAME=Kore"),
])
def test_wrong_voice_settings_stop_start_up_in_portuguese(bot_env, env, named):
    with pytest.raises(config.SettingsError, match=named):
        config.load_settings({**bot_env, **env}, require=())
