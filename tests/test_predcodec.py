"""Per-example predictions as text: exact round trips, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from stabletune.predcodec import ALPHABET, decode_predictions, encode_predictions


def test_class_round_trip_and_size():
    rng = np.random.default_rng(0)
    preds = rng.integers(0, len(ALPHABET), size=1000)
    text = encode_predictions(preds, regression=False)
    assert text.startswith("c:") and len(text) == 1002 and text.isascii()
    out = decode_predictions(text)
    assert out.dtype == np.int64 and np.array_equal(out, preds)
    assert encode_predictions(np.array([0, 1, 1, 0]), regression=False) == "c:0110"


def test_score_round_trip_is_float32_exact():
    scores = np.array([0.0, 1.5, -2.25, 5.0, 1e-7, 3.14159265358979])
    out = decode_predictions(encode_predictions(scores, regression=True))
    assert np.array_equal(out, scores.astype(np.float32).astype(np.float64))
    assert decode_predictions(encode_predictions(np.array([]), regression=True)).size == 0


@pytest.mark.parametrize("preds", [np.array([0, 62]), np.array([-1, 0]), np.array([0.5, 1.0])])
def test_bad_class_predictions_are_refused(preds):
    with pytest.raises(ValueError, match="class predictions must be integers"):
        encode_predictions(preds, regression=False)


@pytest.mark.parametrize("text,msg", [("x:01", "not an encoded"), ("c:01!", "character '!'"),
                                      ("f:@@@@", "bad base64"), ("f:AAA=", "not whole float32s"), (None, "not an")])
def test_bad_text_is_refused(text, msg):
    with pytest.raises(ValueError, match=msg):
        decode_predictions(text)
