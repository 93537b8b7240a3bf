"""Packing: several short examples per row, so rows are not mostly padding.

BERT's data has a long tail of short examples (short_seq_prob, document ends); padded
one per row they waste a sixth of the positions on the embedded corpus. `pack` fills
rows best-fit-decreasing, up to `max_per_row` examples each. The model keeps packed
examples apart: a token attends only within its own example (`example_ids`), position
ids restart per example, and NSP/SOP is predicted from each example's own [CLS]
(`cls_positions`), with one label per example.
"""

from bert_jax.data import pairs


def pack_rows(examples: list[pairs.Example], seq_len: int,
         max_per_row: int) -> list[list[pairs.Example]]:
  """Rows of examples (total length <= seq_len, at most max_per_row each), longest
  examples first, each into the open row it fills best. A pure function of its input
  order (ties keep it)."""
  if max_per_row <= 1:
    return [[e] for e in examples]
  order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
  rows: list[list[pairs.Example]] = []
  # open_rows[c]: rows with exactly c free positions that can take another example.
  open_rows: list[list[int]] = [[] for _ in range(seq_len + 1)]
  for i in order:
    example = examples[i]
    need = len(example.input_ids)
    free = next((c for c in range(need, seq_len + 1) if open_rows[c]), None)
    if free is None:
      rows.append([])
      row, free = len(rows) - 1, seq_len
    else:
      row = open_rows[free].pop()
    rows[row].append(example)
    if len(rows[row]) < max_per_row and free - need > 0:
      open_rows[free - need].append(row)
  return rows


def concat(row: list[pairs.Example]) -> dict:
  """The features of a packed row: tokens end to end, one label and length per
  example."""
  return {
      "input_ids": [t for e in row for t in e.input_ids],
      "segment_ids": [t for e in row for t in e.segment_ids],
      "word_start": [t for e in row for t in e.word_start],
      "next_sentence_label": [e.next_sentence_label for e in row],
      "example_lengths": [len(e.input_ids) for e in row],
  }
