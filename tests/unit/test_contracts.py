"""The frames the browser reads and stored explanations back: their keys are pinned here."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workers.contracts import FRAME_ADAPTER, FRAME_TYPES, conversation_group

PINNED = {
    "chat.delta": {"type", "message_id", "text"},
    "chat.done": {"type", "message_id"},
    "chat.failed": {"type", "message_id", "error"},
    "explanation.progress": {"type", "explanation_id", "stage", "done", "total"},
    "explanation.text": {"type", "explanation_id", "text"},
    "explanation.done": {
        "type",
        "explanation_id",
        "text",
        "mse",
        "cosine",
        "fve",
        "relative_mse",
        "confidence",
        "specificity",
    },
    "explanation.failed": {"type", "explanation_id", "error"},
    "explanation.queued": {"type", "explanation_id", "place", "line"},
    "run.progress": {"type", "run_id", "message_id", "done", "total"},
}

SAMPLES = {
    "chat.delta": {"message_id": "m", "text": "Hel"},
    "chat.done": {"message_id": "m"},
    "chat.failed": {"message_id": "m", "error": "e"},
    "explanation.progress": {"explanation_id": "e", "stage": "capturing", "done": 0, "total": 1},
    "explanation.text": {"explanation_id": "e", "text": "A cat"},
    "explanation.done": {
        "explanation_id": "e",
        "text": "A cat",
        "mse": 0.1,
        "cosine": 0.9,
        "fve": 0.5,
        "relative_mse": 0.5,
        "confidence": "low",
        "specificity": 0.4,
    },
    "explanation.failed": {"explanation_id": "e", "error": "e"},
    "explanation.queued": {"explanation_id": "e", "place": 3, "line": "3rd in line"},
    "run.progress": {"run_id": "r", "message_id": "m", "done": 4, "total": 16},
}


@pytest.mark.parametrize("frame_type", FRAME_TYPES)
def test_each_frame_keeps_its_pinned_keys(frame_type):
    frame = FRAME_ADAPTER.validate_python({"type": frame_type, **SAMPLES[frame_type]})
    assert set(frame.model_dump()) == PINNED[frame_type]


def test_a_frame_with_an_unknown_key_is_rejected():
    with pytest.raises(ValueError):
        FRAME_ADAPTER.validate_python({"type": "chat.done", "message_id": "m", "html": "<b>"})


def test_group_names_are_valid_channel_layer_names():
    name = conversation_group("0b5c3a5e-6a59-4a53-9a47-3f0b1c2d3e4f")
    assert name == "conversation.0b5c3a5e6a594a539a473f0b1c2d3e4f" and len(name) < 100


def test_importing_the_asgi_application_does_not_import_torch():
    code = (
        "import sys, nlaweb.asgi, nlaweb.urls, nlaweb.chat.views, nlaweb.explanations.views;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
