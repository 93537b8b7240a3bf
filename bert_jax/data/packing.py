"""Packing: several short examples per row, so rows are not mostly padding.

BERT's data has a long tail of short examples (short_seq_prob, document ends); padded
one per row they waste a sixth of the positions on the embedded corpus. `pack` fills
rows best-fit-decreasing, up to `max_per_row` examples each. The model keeps packed
examples apart: a token attends only within its own example (`example_ids`), position
ids restart per example, and NSP/SOP is predicted from each example's own [CLS]
(`cls_positions`), with one label per example.
"""


def pack_rows(lengths, seq_len: int, max_per_row: int) -> list[list[int]]:
  """Rows of example indices (total length <= seq_len, at most max_per_row each),
  longest examples first, each into the open row it fills best. A pure function of
  the lengths' order (ties keep it)."""
  lengths = [int(n) for n in lengths]
  if max_per_row <= 1:
    return [[i] for i in range(len(lengths))]
  order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
  rows: list[list[int]] = []
  # open_rows[c]: rows with exactly c free positions that can take another example;
  # bit c of `some` is set when there is one (the best fit is then a bit scan).
  open_rows: list[list[int]] = [[] for _ in range(seq_len + 1)]
  some = 0
  for i in order:
    need = lengths[i]
    fits = some >> need
    if not fits:
      rows.append([])
      row, free = len(rows) - 1, seq_len
    else:
      free = need + (fits & -fits).bit_length() - 1
      row = open_rows[free].pop()
      if not open_rows[free]:
        some &= ~(1 << free)
    rows[row].append(i)
    if len(rows[row]) < max_per_row and free - need > 0:
      open_rows[free - need].append(row)
      some |= 1 << (free - need)
  return rows
