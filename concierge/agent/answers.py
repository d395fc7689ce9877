"""Typed answers to a confirmation ("Go ahead?"): `read_yes_no`.

Shared by the surfaces that take a typed answer — the REPL's prompt, and the HTTP chat when a
message arrives while a confirmation is open — so "yes please" means the same everywhere.
An unclear answer is None: the surface asks again, it never guesses no.
"""

from __future__ import annotations

import re

__all__ = ["read_yes_no"]

# Typed answers to "Go ahead?". Filler words are dropped first ("yes please", "ok, do it").
_FILLER = {"please", "thanks", "thank", "you", "just", "then", "so", "well", "um", "uh", "oh",
           "i", "think", "guess"}
_YES_WORDS = {"y", "yes", "yep", "yeah", "yea", "ya", "yup", "sure", "ok", "okay", "k", "go",
              "confirm", "confirmed", "approve", "approved", "absolutely", "definitely", "certainly",
              "correct", "right", "fine", "alright", "aye", "proceed", "affirmative", "lgtm", "do"}
_YES_PHRASES = {"go ahead", "do it", "go for it", "sounds good", "looks good", "of course", "please do",
                "make it so", "ship it", "thats right", "that's right", "lets do it", "let's do it",
                "do that", "yes do it", "all good"}
_NO_WORDS = {"n", "no", "nope", "nah", "nay", "cancel", "stop", "dont", "don't", "decline", "abort",
             "never", "negative", "wait", "hold", "skip"}
_NO_PHRASES = {"not now", "not yet", "never mind", "nevermind", "forget it", "hold on", "no way",
               "leave it", "not really", "better not", "do not", "dont do it", "don't do it"}
_UNSURE = {"but", "not", "maybe", "unless", "except", "instead", "actually", "what", "why", "how",
           "which", "change", "rename", "wrong", "isn't", "isnt", "hmm",
           # a correction after the no ("no wait, call it Bar"): not a plain no
           "call", "called", "name", "named", "use", "should", "it's", "its", "make", "set", "is"}


def read_yes_no(text: str) -> bool | None:
    """A typed answer to a confirmation: True (yes), False (no), or None when it is not clear.

    Clear answers: "y", "yes please", "sure", "ok do it", "go for it"; "n", "nah", "no thanks",
    "don't", "not now". Anything hedged or different ("yes but rename it", "maybe", "what
    would it do?") is None: the surface asks again rather than guess.
    """
    words = re.sub(r"[^\w' ]+", " ", text.lower().replace("’", "'")).split()
    words = [w for w in words if w not in _FILLER]
    if not words:
        return None
    phrase = " ".join(words)
    if phrase in _NO_PHRASES:
        return False
    if phrase in _YES_PHRASES:
        return True
    first, rest = words[0], set(words[1:])
    if first in _NO_WORDS and not rest & (_YES_WORDS - {"do"} | _UNSURE - {"not"}):
        return False
    if first in _YES_WORDS - {"do"} and not rest & (_NO_WORDS | _UNSURE):
        return True
    if first == "do" and phrase in _YES_PHRASES:
        return True
    return None
