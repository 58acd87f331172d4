"""Open-WebUI 0.12.4's own RAG and audio calls reach the BFF with webui-integration/openwebui.env.

A normal user uploads a document into a knowledge base (embeddings), asks a question about it
(a retrieval query embedding, then the chat with the retrieved text), has a reply read aloud
(text to speech) and dictates (speech to text); each call is recorded under that user's
Open-WebUI id with its gateway operation, and shows in the usage API.
"""

import io
import time
import uuid
import wave
from collections.abc import Callable
from typing import TypeVar

from bff.clickhouse import ClickHouseStore
from bff.telemetry import attributes as attr
from openwebui.api import Account
from openwebui.conftest import Stack
from openwebui.test_openwebui_e2e import USER_MODEL, span_of, usage
from support.fake_openai import PNG_B64, SPEECH_BYTES, TRANSCRIPT, FakeProviderState

# Paragraphs, so that Open-WebUI's splitter (CHUNK_SIZE 1000) makes several chunks of one document.
SECRET_FACT = "The blue heron project ships on the fourteenth of November."
DOCUMENT = "\n\n".join(
    [f"Section {n}. " + " ".join(f"Note {n}.{m}: the team reviewed item {m} of the release plan." for m in range(12)) for n in range(3)]
    + [SECRET_FACT]
)
T = TypeVar("T")


def _forwarded(store: ClickHouseStore, account: Account, operation: str, model: str) -> dict[str, str]:
    """The user's span for one gateway operation: Open-WebUI's service key with the user's signed JWT."""
    return span_of(
        store,
        account.id,
        {attr.OPERATION_NAME: operation, attr.REQUEST_MODEL: model, attr.AUTH_METHOD: "forwarded_jwt", attr.ROLE: "user", attr.HTTP_STATUS: "200"},
    )


def test_a_document_in_a_knowledge_base_is_embedded_through_the_bff_as_its_user(
    stack: Stack, admin: Account, user: Account, store: ClickHouseStore, provider_state: FakeProviderState
) -> None:
    embed_model = stack.settings["RAG_EMBEDDING_MODEL"]
    before = len(provider_state.bodies_at("embeddings"))
    # Users may not create knowledge bases by default (USER_PERMISSIONS_WORKSPACE_KNOWLEDGE_ACCESS);
    # an admin creates one and shares it with the user (read to search it, write to add files).
    grants = [{"principal_type": "user", "principal_id": user.id, "permission": permission} for permission in ("read", "write")]
    knowledge_id = stack.openwebui.create_knowledge(admin, "Team notes", grants)
    uploaded = stack.openwebui.upload_file(user, "release-notes.txt", DOCUMENT.encode(), "text/plain")
    assert uploaded["data"].get("status") != "failed", uploaded
    added = stack.openwebui.add_to_knowledge(user, knowledge_id, uploaded["id"])
    assert added.status_code == 200, added.text
    assert [file["id"] for file in added.json()["files"]] == [uploaded["id"]]

    # Open-WebUI sent the document's chunks to the BFF, RAG_EMBEDDING_BATCH_SIZE texts per request
    document_calls = [body for body in provider_state.bodies_at("embeddings")[before:] if SECRET_FACT in " ".join(body["input"])]
    assert document_calls, "the document never reached the provider's embeddings endpoint"
    assert all(len(body["input"]) > 1 for body in document_calls)  # batched, not one request per chunk
    span = _forwarded(store, user, "embeddings", embed_model)
    assert int(span[attr.INPUT_TOKENS]) > 0 and span[attr.COST_USD] not in ("", "0")

    assert all(body["user"] == user.id for body in document_calls)  # the BFF set `user` to the Open-WebUI id

    # The user asks about it: Open-WebUI generates search queries (a chat call), embeds them, and
    # the chat gets the retrieved text.
    question = "When does the blue heron project ship?"
    asked = len(provider_state.bodies_at("embeddings"))
    answer = stack.openwebui.chat(user, USER_MODEL, question, files=[{"type": "collection", "id": knowledge_id}])
    assert answer.status_code == 200, answer.text
    queries = provider_state.bodies_at("embeddings")[asked:]
    assert queries and all(body["user"] == user.id for body in queries), "no retrieval query embedding reached the provider"
    sent = str(provider_state.requests[-1]["messages"])
    assert SECRET_FACT in sent and question in sent

    sent_for_user = len([body for body in provider_state.bodies_at("embeddings") if body.get("user") == user.id])
    rows = eventually(
        lambda: usage(stack, admin, "/api/usage/breakdown", by="model", user=user.id, operation="embeddings")["rows"],
        lambda rows: sum(row["requests"] for row in rows) == sent_for_user,
    )
    assert [row["key"] for row in rows] == [embed_model] and rows[0]["input_tokens"] > 0
    by_operation = {row["key"]: row for row in usage(stack, admin, "/api/usage/breakdown", by="operation", user=user.id)["rows"]}
    assert by_operation["embeddings"]["requests"] == rows[0]["requests"]


def test_read_aloud_goes_through_the_bff_as_its_user(
    stack: Stack, admin: Account, user: Account, store: ClickHouseStore, provider_state: FakeProviderState
) -> None:
    text = f"Here is your answer, read aloud ({uuid.uuid4().hex[:8]})."  # Open-WebUI caches speech by its text
    answer = stack.openwebui.speech(user, text)
    assert answer.status_code == 200, answer.text
    assert answer.content == SPEECH_BYTES  # mp3 from the provider, through LiteLLM, the BFF and Open-WebUI's cache
    (body,) = [body for body in provider_state.bodies_at("audio/speech") if body.get("input") == text]
    assert body["voice"] == "alloy"
    span = _forwarded(store, user, "audio_speech", stack.settings["AUDIO_TTS_MODEL"])
    assert span[attr.COST_USD] not in ("", "0")  # priced per character

    again = stack.openwebui.speech(user, text)  # served from Open-WebUI's cache: nothing reaches the BFF
    assert again.content == SPEECH_BYTES
    assert len([body for body in provider_state.bodies_at("audio/speech") if body.get("input") == text]) == 1

    rows = usage(stack, admin, "/api/usage/breakdown", by="model", user=user.id, operation="audio_speech")["rows"]
    assert [row["key"] for row in rows] == [stack.settings["AUDIO_TTS_MODEL"]]


def test_dictation_goes_through_the_bff_as_its_user(
    stack: Stack, admin: Account, user: Account, store: ClickHouseStore, provider_state: FakeProviderState
) -> None:
    model = stack.settings["AUDIO_STT_MODEL"]
    before = len(provider_state.bodies_at("audio/transcriptions"))
    answer = stack.openwebui.transcribe(user, "recording.wav", _wav(seconds=1.0), "audio/wav")
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"] == TRANSCRIPT
    (body,) = provider_state.bodies_at("audio/transcriptions")[before:]  # one call: it succeeded, no retry without language
    assert body["file"]["size"] > 0
    span = _forwarded(store, user, "audio_transcription", model)
    assert span[attr.COST_USD] not in ("", "0")  # priced per second of audio

    rows = usage(stack, admin, "/api/usage/breakdown", by="model", user=user.id, operation="audio_transcription")["rows"]
    assert [row["key"] for row in rows] == [model] and rows[0]["requests"] == 1


def test_an_image_from_the_chat_toggle_reaches_the_bff_without_the_chat_id(
    stack: Stack, user: Account, store: ClickHouseStore
) -> None:
    """Function Calling "Legacy": Open-WebUI generates the image itself; its image call carries the user, not the chat."""
    chat_id = f"local:{uuid.uuid4().hex}"  # a temporary chat: answered at once, nothing saved
    answer = stack.openwebui.chat(
        user, USER_MODEL, "Draw a lighthouse at dusk", chat_id=chat_id,
        features={"image_generation": True}, params={"function_calling": "legacy"},
    )
    assert answer.status_code == 200, answer.text
    workflow = stack.settings["IMAGE_GENERATION_MODEL"]
    image = span_of(store, user.id, {attr.OPERATION_NAME: "images", attr.REQUEST_MODEL: workflow, attr.HTTP_STATUS: "200"})
    assert image[attr.AUTH_METHOD] == "forwarded_jwt" and image[attr.ROLE] == "user"
    assert image.get(attr.SESSION_ID, "") == ""  # Open-WebUI 0.12.4 sends no X-OpenWebUI-Chat-Id on image calls ...
    span_of(store, user.id, {attr.OPERATION_NAME: "chat", attr.SESSION_ID: chat_id})  # ... but does on the chat's own calls


def test_an_image_edit_goes_through_the_bff_as_its_user(
    stack: Stack, user: Account, store: ClickHouseStore, provider_state: FakeProviderState
) -> None:
    before = len(provider_state.bodies_at("images/edits"))
    answer = stack.openwebui.call(
        user, "POST", "/api/v1/images/edit", json={"image": f"data:image/png;base64,{PNG_B64}", "prompt": "Make it blue"}
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == 1  # the edited image, stored in Open-WebUI's files
    (body,) = provider_state.bodies_at("images/edits")[before:]
    parts = [part for name, part in body.items() if name in ("image", "image[]")]  # LiteLLM names the part
    assert body["prompt"] == "Make it blue" and len(parts) == 1, body
    model = stack.settings["IMAGE_EDIT_MODEL"]
    span = span_of(store, user.id, {attr.OPERATION_NAME: "images", attr.REQUEST_MODEL: model, attr.HTTP_STATUS: "200"})
    assert span[attr.AUTH_METHOD] == "forwarded_jwt" and span.get(attr.SESSION_ID, "") == ""


def eventually(fetch: Callable[[], T], done: Callable[[T], bool], seconds: float = 15) -> T:
    """fetch() until done(answer): spans reach ClickHouse through the batch exporter."""
    deadline = time.monotonic() + seconds
    while not done(answer := fetch()):
        assert time.monotonic() < deadline, f"still {answer!r}"
        time.sleep(0.2)
    return answer


def _wav(seconds: float) -> bytes:
    """A silent 16 kHz mono WAV, as a browser recording uploads it."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * int(16000 * seconds))
    return buffer.getvalue()
