"""Statements vector memory runs itself (the rest goes through the store's operations)."""

from __future__ import annotations

# Keywords of a conversation: PostgreSQL's full-text statistics (ts_stat) over
# its messages, one document each. ts_stat takes its documents as the text of a
# query; that text is this constant, and the messages reach it as a
# transaction-local setting (a parameter of SET_DOCUMENTS), never as SQL text.
SET_DOCUMENTS = "SELECT set_config('haive.keyword_documents', %(docs)s, true)"

# Words (the 'simple' configuration: lower-cased, not stemmed) ranked by how
# often they occur, then in how many messages; the stop words of the
# configuration %(cfg)s (its to_tsvector of the word is empty) left out.
KEYWORDS = """
SELECT s.word, s.nentry, s.ndoc
FROM ts_stat(
    'SELECT to_tsvector(''simple'', d) '
    'FROM jsonb_array_elements_text(current_setting(''haive.keyword_documents'')::jsonb) AS d'
) AS s
WHERE s.word ~ '^[[:alpha:]][[:alnum:]_-]+$'
  AND to_tsvector(%(cfg)s::regconfig, s.word) <> ''::tsvector
ORDER BY s.nentry DESC, s.ndoc DESC, s.word
LIMIT %(k)s
"""
