"""The regular expressions behind the text features: one definition, two engines.

Every pattern here is read both by polars (Rust ``regex``) and by the per-row Python reference
(:mod:`prefpred.features.reference`, Python ``re``), and the test suite checks that they count the
same on real rows. So the patterns keep to the syntax both engines read the same way: explicit
character ranges instead of ``\\p{..}``, ``\\s``, ``\\w`` or ``\\d`` (whose Unicode tables differ
between the engines), no look-around, no back-references, no ``$`` (Python's also matches before a
final newline), and ``(?m)^`` for line starts.
"""

from __future__ import annotations

from typing import Final

#: Whitespace, spelled out (``\s`` differs between Python and Rust on control characters).
WS: Final = r" \t\n\r\f\v\u00a0\u3000"

# --------------------------------------------------------------------------- scripts
LATIN: Final = r"A-Za-z\u00c0-\u024f"
CYRILLIC: Final = r"\u0400-\u04ff"
#: Han, kana and Hangul: the scripts where a character is roughly a word.
CJK: Final = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"

#: Characters that run together into one text token (letters and digits).
TOKEN_RUN: Final = rf"0-9{LATIN}{CYRILLIC}"
#: Text tokens: runs of Latin/Cyrillic letters and digits, single CJK characters, and single
#: other visible characters (punctuation, symbols). A cheap stand-in for subword tokens.
TOKEN: Final = rf"[{TOKEN_RUN}]+|[^{WS}]"
#: Characters that run together into one word token (lower-case letters and digits).
WORD_RUN: Final = rf"0-9a-z\u00c0-\u024f{CYRILLIC}"
#: Word tokens for overlap and TF-IDF similarity (applied to lower-cased text).
WORD: Final = rf"[{WORD_RUN}]+|[{CJK}]"
#: Sentence terminators.
SENT_END: Final = ".!?。！？"

# --------------------------------------------------------------------------- counted patterns
#: name -> pattern; each feature counts the non-overlapping matches in a turn.
COUNTED: Final[dict[str, str]] = {
    "words": rf"[^{WS}]+",
    "tokens": TOKEN,
    # a sentence: a run starting with a visible character, up to a terminator or line break
    "sentences": rf"[^{WS}{SENT_END}][^{SENT_END}\n]*",
    # a paragraph: text starting at the beginning or after a blank line
    "paragraphs": rf"(?:\A|\n[ \t]*\n)[{WS}]*[^{WS}]",
    "headers": r"(?m)^[ \t]*#{1,6}[ \t]+[^ \t\n]",
    "bold": r"\*\*[^*\n]+\*\*|__[^_\n]+__",
    "italics": r"(?:^|[^*0-9A-Za-z_])\*[^*\n \t][^*\n]*\*",
    "bullets": r"(?m)^[ \t]*[-*+•][ \t]+[^ \t\n]",
    "numbered": r"(?m)^[ \t]*[0-9]{1,3}[.)][ \t]+[^ \t\n]",
    "table_rows": r"(?m)^[ \t]*\|[^\n]*\|",
    "inline_code": r"(?:^|[^`])`[^`\n]+`",
    "links": r"https?://[^" + WS + r"]+|\[[^\]\n]+\]\([^)\n]+\)",
    "latex": r"\$\$|\$[^$\n]+\$|\\\(|\\\[|\\(?:frac|sum|int|sqrt|begin|cdot|times|alpha|beta|pi)",
    "digits": r"[0-9]",
    "upper": r"[A-Z\u00c0-\u00de\u0410-\u042f]",
    "letters": rf"[{LATIN}{CYRILLIC}]",
    "punct": r"[!-/:-@\[-`{-~\u3001\u3002\uff01\uff0c\uff1a\uff1b\uff1f\u2014\u2026]",
    "question": r"[?？]",
    "exclaim": r"[!！]",
    "emoji": r"[\U0001F300-\U0001FAFF\u2600-\u27bf\u2b50\u2b55]",
    "latin": rf"[{LATIN}]",
    "cyrillic": rf"[{CYRILLIC}]",
    "cjk": rf"[{CJK}]",
    "refusal": (
        r"(?i)i can[’']?t (?:help|assist|provide|do that|fulfill|comply|create|generate|write)"
        r"|i cannot|i am (?:not able|unable)|i'm (?:not able|unable)|i won[’']t be able"
        r"|i will not|i'm not comfortable|i am not comfortable|not appropriate for me"
        r"|against my (?:programming|guidelines|policy)|i must decline|i have to decline"
        r"|我无法|我不能|无法提供|不能提供|无法回答|я не могу|не могу помочь|не могу предоставить"
        r"|não posso|não consigo|no puedo|je ne peux pas|ich kann (?:nicht|keine)"
    ),
    "apology": (
        r"(?i)sorry|apologi[sz]e|my apologies|抱歉|对不起|很遗憾|извин|к сожалению|desculp"
        r"|lo siento|lamento|désolé|désolée|entschuldig|es tut mir leid"
    ),
    "ai_self": (
        r"(?i)as an ai|as a language model|as an artificial intelligence|as a large language"
        r"|as a (?:helpful|virtual) assistant|i am an ai|i'm an ai|i am a language model"
        r"|i'm a language model|i don[’']t have personal|i do not have personal"
        r"|作为一个?(?:人工智能|ai|语言模型|AI)|我是一个?(?:人工智能|ai|语言模型|AI)"
        r"|как (?:ии|искусственный интеллект|языковая модель)"
        r"|como (?:uma? )?(?:ia|inteligência artificial|modelo de linguagem)"
    ),
}
