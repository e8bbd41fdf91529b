"""parse_body and reason_to_ignore on real Evolution payloads (v1, v2.0–2.4), and parse_body on any JSON."""

import copy
import json

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from config import load_settings
from conftest import CUSTOMER, PAYLOADS, load_payload, text_message
from parser import Message, mask, parse_body, reason_to_ignore

MARIA = "5511999999901@s.whatsapp.net"  # one customer, seen by every Evolution version in payloads 58–62
MARIA_LID = "10000000000001@lid"
NOW = 1766068000


def parse_one(body, path=""):
    messages = parse_body(body, path)
    assert len(messages) == 1, messages
    return messages[0]


def settings(**env):
    return load_settings({k.upper(): str(v) for k, v in env.items()}, require=())


def fresh(name):
    """A real payload whose message was sent just now (NOW), so no age rule applies."""
    body = load_payload(name)
    body["data"]["messageTimestamp"] = NOW
    return body


# --- what a message says --------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, text", [
    ("01_v2_text_n8n_item_with_headers.json", "text", "Oii"),
    ("30_v1_8_extendedTextMessage_unflattened.json", "text", "Oi, vocês abrem no sábado?"),
    ("31_v2_0_extendedTextMessage_reply_quoted_unflattened.json", "text", "Sim, para amanhã de manhã"),
    ("32_v2_2_reply_flattened_quote_in_data_contextInfo.json", "text", "Sim, para amanhã de manhã"),
    ("33_v2_2_imageMessage_caption.json", "image", "Esse é o modelo que eu quero"),
    ("34_v2_2_videoMessage_caption.json", "video", "Olha o barulho que o carro está fazendo"),
    ("35_v1_8_documentWithCaptionMessage_wrapped.json", "document", "Segue o orçamento assinado"),
    ("36_v2_2_document_caption_flattened_from_documentWithCaption.json", "document", "Segue o orçamento assinado"),
    ("37_v2_2_ephemeralMessage_wrapper_not_flattened.json", "text", "Pode me mandar o endereço?"),
    ("38_v2_2_viewOnceMessageV2_image.json", "image", "só pra você ver"),
    ("39_v2_2_editedMessage_wrapper_as_upsert.json", "text", "Sim, para amanhã à tarde"),
    ("46_v2_2_buttonsResponseMessage.json", "text", "Ver horários"),
    ("47_v2_2_listResponseMessage.json", "text", "Corte masculino"),
    ("48_v2_2_templateButtonReplyMessage.json", "text", "Confirmar"),
    ("09_v2_image_webhook_base64_placeholder.json", "image", ""),
    ("10_v2_audio_ptt_webhook_base64_placeholder.json", "audio", ""),
    ("23_v2_document_pdf_fileName_pageCount.json", "document", ""),
    ("49_v2_2_reactionMessage.json", "reaction", ""),
    ("50_v2_2_stickerMessage.json", "sticker", ""),
    ("51_v2_2_locationMessage.json", "location", ""),
    ("52_v2_2_contactMessage.json", "contact", ""),
    ("53_v2_2_pollCreationMessageV3.json", "poll", ""),
    ("45_v2_3_7_secretEncryptedMessage_edit_upsert.json", "protocol", ""),  # an encrypted edit
])
def test_text_and_kind_of_each_real_message(name, kind, text):
    message = parse_one(load_payload(name))
    assert (message.kind, message.text) == (kind, text)
    assert message.event == "messages.upsert" and message.instance and message.message_id


def test_v2_envelope_fields():
    message = parse_one(load_payload("01_v2_text_n8n_item_with_headers.json"))
    assert message == Message(
        event="messages.upsert", instance="caldasIA", chat_id="556499999901@s.whatsapp.net",
        reply_to="556499999901", message_id="782647C0073AA0039110EB72593C4AC5", text="Oii",
        push_name="Mayssa Ferreira", from_me=False, is_group=False, timestamp=1750876007, kind="text",
        own_jid="556499999902@s.whatsapp.net")


def test_v1_from_me_message():
    message = parse_one(load_payload("18_v1_messages_upsert_fromMe_duplicate_issue631.json"))
    assert (message.instance, message.reply_to, message.from_me) == ("553500000000", "5511900000000", True)
    assert message.text.startswith("Clínica ****** agradece seu contato.")


def test_media_details_for_the_worker():
    image = parse_one(load_payload("09_v2_image_webhook_base64_placeholder.json"))
    assert image.media == {"mimetype": "image/jpeg", "file_length": 226688, "seconds": 0, "file_name": "",
                           "base64": "base64img"}
    audio = parse_one(load_payload("68_v2_3_7_audio_ptt_no_base64_long_bytes_objects.json"))
    assert audio.media == {"mimetype": "audio/ogg; codecs=opus", "file_length": 10460, "seconds": 4, "file_name": ""}
    document = parse_one(load_payload("23_v2_document_pdf_fileName_pageCount.json"))
    assert document.media["file_name"] == "formulario_jus_digital.pdf"


def test_protocol_message_is_its_own_kind():
    body = load_payload("39_v2_2_editedMessage_wrapper_as_upsert.json")
    revoke = body["data"]["message"]["editedMessage"]["message"]
    del revoke["protocolMessage"]["editedMessage"], revoke["protocolMessage"]["timestampMs"]
    revoke["protocolMessage"]["type"] = "REVOKE"
    body["data"]["message"] = revoke
    assert parse_one(body).kind == "protocol"


# --- body shapes ----------------------------------------------------------------------------

def test_list_body_and_list_data():
    assert parse_one(load_payload("02_v2_text_list_wrapped_contextinfo_source_unknown.json")).text == "Hola"
    body = text_message("primeira", "LIST1")
    body["data"] = [body["data"], text_message("segunda", "LIST2")["data"]]
    assert [m.text for m in parse_body(body)] == ["primeira", "segunda"]
    assert [m.text for m in parse_body([text_message("a", "L3"), text_message("b", "L4")])] == ["a", "b"]


def test_uppercase_event_name_and_event_from_the_url_path():
    body = text_message("oi", "UP1")
    body["event"] = "MESSAGES_UPSERT"
    assert parse_one(body).event == "messages.upsert"
    assert parse_one(text_message("oi", "UP2"), "messages-upsert").text == "oi"
    del body["event"]
    assert parse_one(body, "messages-upsert").event == "messages.upsert"
    assert parse_body(body) == []


@pytest.mark.parametrize("name", [
    "13_v2_contacts_upsert_array.json",
    "17_v2_sendText_201_response_br_9th_digit.json",
    "40_v2_2_messages_update_edit_no_status.json",
    "41_v2_3_4_messages_update_edit_status_DELETED.json",
    "42_v2_3_7_messages_update_edit_with_editedMessage.json",
    "43_v2_3_7_messages_edited_protocolMessage_REVOKE.json",
    "44_v2_3_7_messages_delete_revoke.json",
    "66_v2_3_7_messages_update_READ.json",
    "67_v2_3_7_connection_update_open.json",
])
def test_events_that_are_not_messages_give_nothing(name):
    assert parse_body(load_payload(name)) == []
    assert parse_body(load_payload(name), "contacts-upsert") == []


def test_send_message_events_are_parsed_as_our_own():
    message = parse_one(load_payload("65_v2_3_7_send_message_own_sendText.json"))
    assert (message.event, message.from_me, message.reply_to) == ("send.message", True, "5511999999901")


@pytest.mark.parametrize("value, expected", [
    (1766068000, 1766068000),
    ("1766068000", 1766068000),
    ({"low": 1766068000, "high": 0, "unsigned": True}, 1766068000),
    ({"low": -2094967296, "high": 0, "unsigned": False}, 2200000000),  # a uint32 read as signed
    (None, 0),
    (True, 0),
])
def test_message_timestamp_as_int_str_or_long(value, expected):
    body = text_message("oi", "TS1")
    body["data"]["messageTimestamp"] = value
    assert parse_one(body).timestamp == expected


@pytest.mark.parametrize("value", [pytest.param("²", id="superscript-2"), pytest.param("9" * 5000, id="5000-digits")])
def test_timestamp_strings_that_int_cannot_read_give_0_instead_of_raising(value):
    body = text_message("oi", "TS2")
    body["data"]["messageTimestamp"] = value
    assert parse_one(body).timestamp == 0


# --- who the chat is: '@lid' addressing in every version ------------------------------------

@pytest.mark.parametrize("name", [
    "58_v2_3_0_lid_remoteJid_with_senderPn.json",
    "59_v2_3_2_lid_senderPn_previousRemoteJid.json",
    "60_v2_3_4_lid_rewritten_remoteJidAlt_no_addressingMode.json",
    "61_v2_3_7_lid_remoteJid_rewritten_to_phone.json",
    "62_v2_4_0_lid_swapped_remoteJidAlt_is_lid.json",
])
def test_one_customer_is_one_chat_whatever_the_version(name):
    message = parse_one(load_payload(name))
    assert (message.chat_id, message.reply_to) == (MARIA, "5511999999901")


def test_2_3_5_lid_shape_gives_the_same_chat_as_2_3_7_and_2_4_0():
    body = load_payload("04_v2_3_5plus_lid_with_remoteJidAlt_long_buffer_quirk.json")
    assert (parse_one(body).chat_id, parse_one(body).lid) == ("558899999908@s.whatsapp.net", "10000000000007@lid")
    body["data"]["key"].update(remoteJid=MARIA_LID, remoteJidAlt=MARIA)
    newer = [parse_one(load_payload(name)) for name in ("61_v2_3_7_lid_remoteJid_rewritten_to_phone.json",
                                                         "62_v2_4_0_lid_swapped_remoteJidAlt_is_lid.json")]
    assert {parse_one(body).chat_id} == {m.chat_id for m in newer} == {MARIA}
    assert parse_one(body).reply_to == "5511999999901"


@pytest.mark.parametrize("field", ["remoteJidAlt", "senderPn", "previousRemoteJid"])
def test_phone_jid_is_found_in_any_field(field):
    body = text_message("oi", "LID1")
    body["data"]["key"].update({"remoteJid": MARIA_LID, field: MARIA})
    message = parse_one(body)
    assert (message.chat_id, message.reply_to, message.lid) == (MARIA, "5511999999901", MARIA_LID)


@pytest.mark.parametrize("name, lid", [
    ("63_v2_3_7_lid_only_no_phone_jid.json", "10000000000006@lid"),
    ("64_v2_2_3_lid_only_no_phone_jid.json", "10000000000007@lid"),
])
def test_lid_only_chat_is_answered_at_the_lid(name, lid):
    message = parse_one(load_payload(name))
    assert (message.chat_id, message.reply_to, message.lid) == (lid, lid, lid)


def test_groups_are_keyed_by_the_group():
    with_lid = parse_one(load_payload("54_v2_3_7_group_participant_lid_participantAlt.json"))
    plain = parse_one(load_payload("55_v2_2_group_participant_only.json"))
    assert with_lid.chat_id == plain.chat_id == with_lid.reply_to == "120363000000000001@g.us"
    assert with_lid.is_group and plain.is_group
    assert with_lid.lid == "10000000000003@lid"


# --- reason_to_ignore -----------------------------------------------------------------------

def test_customer_message_is_not_ignored():
    assert reason_to_ignore(parse_one(text_message("oi", "R1", timestamp=NOW)), settings(), NOW) == ""


@pytest.mark.parametrize("name, reason", [
    ("55_v2_2_group_participant_only.json", "group chat"),
    ("56_v2_3_7_status_broadcast_text.json", "status broadcast"),
    ("57_v2_4_0_send_message_to_newsletter.json", "newsletter"),
    ("49_v2_2_reactionMessage.json", "reaction"),
    ("45_v2_3_7_secretEncryptedMessage_edit_upsert.json", "protocol"),
])
def test_what_the_bot_never_answers(name, reason):
    assert reason in reason_to_ignore(parse_one(fresh(name)), settings(), NOW)


def test_groups_are_answered_when_reply_to_groups_is_on():
    group = parse_one(fresh("55_v2_2_group_participant_only.json"))
    assert reason_to_ignore(group, settings(reply_to_groups="true"), NOW) == ""


def test_from_me_is_left_to_the_webhook():
    assert reason_to_ignore(parse_one(fresh("08_v2_text_fromMe_server_ack.json")), settings(), NOW) == ""


def test_old_messages_are_ignored_as_backlog():
    rules = settings(max_message_age_seconds=600)
    old = parse_one(text_message("oi", "OLD1", timestamp=NOW - 601))
    recent = parse_one(text_message("oi", "OLD2", timestamp=NOW - 599))
    assert reason_to_ignore(old, rules, NOW).startswith("older than 600s")
    assert reason_to_ignore(recent, rules, NOW) == ""
    assert reason_to_ignore(parse_one(load_payload("01_v2_text_n8n_item_with_headers.json")), rules, NOW) != ""


def test_ignore_and_only_numbers():
    message = parse_one(text_message("oi", "NUM1", timestamp=NOW))
    other = "5511999990002"
    assert reason_to_ignore(message, settings(ignore_numbers=f"{other},{CUSTOMER}"), NOW) == "number in IGNORE_NUMBERS"
    assert reason_to_ignore(message, settings(ignore_numbers=other), NOW) == ""
    assert reason_to_ignore(message, settings(only_numbers=other), NOW) == "number not in ONLY_NUMBERS"
    assert reason_to_ignore(message, settings(only_numbers=f" {CUSTOMER} ,{other}"), NOW) == ""


def test_only_numbers_written_with_the_brazilian_9th_digit_match_the_jid_without_it():
    # Evolution drops the 9th digit of mobiles outside DDD 11–30 (payload 17): 5585 9 99999914 → 558599999914.
    message = parse_one(fresh("09_v2_image_webhook_base64_placeholder.json"))
    assert message.reply_to == "558599999914"
    assert reason_to_ignore(message, settings(only_numbers="5585999999914"), NOW) == ""
    assert reason_to_ignore(message, settings(ignore_numbers="5585999999914"), NOW) == "number in IGNORE_NUMBERS"


# --- mask -----------------------------------------------------------------------------------

def test_mask_hides_the_middle_of_numbers_and_jids():
    assert mask("5511999994321") == "5511*****4321"
    assert mask("5511999994321@s.whatsapp.net") == "5511*****4321@s.whatsapp.net"
    assert mask("10000000000007@lid") == "1000******0007@lid"
    assert mask("120363000000000001@g.us") == "1203**********0001@g.us"
    assert mask("12345") == "12***"


# --- parse_body never raises ----------------------------------------------------------------

REAL_NAMES = ("event", "instance", "data", "key", "remoteJid", "remoteJidAlt", "senderPn", "fromMe", "id",
              "message", "conversation", "extendedTextMessage", "text", "ephemeralMessage", "editedMessage",
              "protocolMessage", "imageMessage", "caption", "messageTimestamp", "low", "high", "pushName")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(REAL_NAMES) | st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
PAYLOAD_NAMES = sorted(path.name for path in PAYLOADS.glob("*.json"))
REAL_BODIES = {name: load_payload(name) for name in PAYLOAD_NAMES}  # `replaced` copies before changing


def paths(value, prefix=()):
    """Every place in a JSON value that can be replaced: its own root and each nested key or index."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths(child, (*prefix, key))


def replaced(value, path, new):
    """`value` with the sub-value at `path` replaced by `new` (unchanged if an earlier change removed `path`)."""
    if not path:
        return new
    value = copy.deepcopy(value)
    try:
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = new
    except (KeyError, IndexError, TypeError):
        pass
    return value


@st.composite
def mutated_payloads(draw):
    """A real payload with one to three sub-values (down to data.key.id, data.message.x) replaced by any JSON."""
    body = REAL_BODIES[draw(st.sampled_from(PAYLOAD_NAMES))]
    places = [path for path in paths(body) if len(path) <= 4]
    for _ in range(draw(st.integers(1, 3))):
        body = replaced(body, draw(st.sampled_from(places)), draw(json_values))
    return body


def assert_messages(result):
    assert isinstance(result, list)
    for message in result:
        assert isinstance(message, Message)
        for name in ("event", "instance", "chat_id", "reply_to", "message_id", "text", "push_name", "kind", "lid"):
            assert isinstance(getattr(message, name), str), name
        assert isinstance(message.timestamp, int) and isinstance(message.media, dict)
        assert message.chat_id and message.message_id


@hypothesis_settings(max_examples=150, deadline=None)
@given(body=json_values | mutated_payloads(), path=st.sampled_from(["", "messages-upsert", "send-message"]))
def test_parse_body_never_raises_and_returns_messages(body, path):
    assert_messages(parse_body(body, path))
    assert_messages(parse_body(json.loads(json.dumps(body)), path))  # as it arrives: through JSON
