"""A run's per-example predictions as one short text: what a study stores per run and checkpoint so that
instability beyond the standard deviation (seeds that agree on the score but not on the examples; Du & Nguyen,
ACL 2023) can be measured later, without the model.

Two encodings, both plain ASCII (they travel in SQLite, JSON and CSV unchanged):

* ``c:<one character per example>`` for a classification task: the predicted class index as a digit or letter of
  :data:`ALPHABET` (up to 62 classes) -- 1,000 test examples are 1,002 characters.
* ``f:<base64 of little-endian float32>`` for a regression task (STS-B): 4 bytes per example, 1,336 characters
  for 1,000 examples. float32 is what the model computed (its logits are float32), so nothing is lost.

numpy only: the statistics side (:mod:`stabletune.analysis`) decodes without torch.
"""

from __future__ import annotations

import base64
import string

import numpy as np

ALPHABET = string.digits + string.ascii_lowercase + string.ascii_uppercase


def encode_predictions(preds: np.ndarray, *, regression: bool) -> str:
    """Encode one run's predictions (class indices, or regression scores) in example order.

    Raises:
        ValueError: a class index outside ``[0, 62)``, or a non-integer class prediction.
    """
    preds = np.asarray(preds)
    if regression:
        return "f:" + base64.b64encode(preds.astype("<f4").tobytes()).decode("ascii")
    if preds.size and (not np.issubdtype(preds.dtype, np.integer) or preds.min() < 0 or preds.max() >= len(ALPHABET)):
        raise ValueError(f"class predictions must be integers in [0, {len(ALPHABET)}), got {preds[:5]}...")
    return "c:" + "".join(ALPHABET[i] for i in preds.tolist())


def decode_predictions(text: str) -> np.ndarray:
    """The array :func:`encode_predictions` encoded: int64 class indices, or float64 of the stored float32.

    Raises:
        ValueError: text that is not such an encoding (the message shows its start).
    """
    if not isinstance(text, str) or text[:2] not in ("c:", "f:"):
        raise ValueError(f"not an encoded prediction list: {str(text)[:20]!r}")
    body = text[2:]
    if text[0] == "f":
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            raise ValueError(f"not an encoded prediction list (bad base64): {text[:20]!r}") from None
        if len(raw) % 4:
            raise ValueError(f"not an encoded prediction list ({len(raw)} bytes is not whole float32s)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float64)
    index = {ch: i for i, ch in enumerate(ALPHABET)}
    try:
        return np.fromiter((index[ch] for ch in body), dtype=np.int64, count=len(body))
    except KeyError as exc:
        raise ValueError(f"not an encoded prediction list (character {exc.args[0]!r})") from None


__all__ = ["ALPHABET", "encode_predictions", "decode_predictions"]
