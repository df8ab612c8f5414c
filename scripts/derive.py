#!/usr/bin/env python3
"""Derives fine-tuning data from text files of documents separated by lines
holding only '%' (the fortunes' format). Each document is split into a
prompt, its first line, and a continuation, the rest (a one-line document is
split after its first sentence; documents that cannot be split are left out).

  derive.py sft FILE...   {"prompt", "response"}: the true continuation,
                          for `kiln tokenize --format sft`.
  derive.py dpo FILE...   {"prompt", "chosen", "rejected"}: the true
                          continuation preferred over a corrupted one, for
                          `kiln tokenize --format dpo`. --rejected truncated
                          (default) cuts the continuation after half its
                          words — a model trained on text likes the shorter
                          one better, DPO must teach it not to stop early;
                          --rejected words shuffles the continuation's words
                          (same words, only their order differs); --rejected
                          other takes the continuation of another document.

JSONL goes to stdout, a count to stderr. The output is the same for the
same input and --seed."""
import argparse
import json
import random
import re
import sys


def documents(path):
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        doc = []
        for line in f:
            if line.rstrip("\r\n") == "%":
                yield "".join(doc)
                doc = []
            else:
                doc.append(line)
        yield "".join(doc)


def split(doc):
    """(prompt, continuation), or None when the document has no split."""
    doc = doc.strip()
    if "\n" in doc:
        prompt, rest = doc.split("\n", 1)
    else:
        m = re.search(r"[.!?] +", doc)
        if not m:
            return None
        prompt, rest = doc[: m.end()].rstrip(), doc[m.end():]
    if not prompt.strip() or not rest.strip():
        return None
    return prompt, rest


def shuffled_words(text, rng):
    """The words of `text` in another order (None when there is none)."""
    words = text.split()
    if len(set(words)) < 2:
        return None
    for _ in range(10):
        order = words[:]
        rng.shuffle(order)
        if order != words:
            return " ".join(order)
    return None


def truncated(text):
    """The first half of `text`'s words (None when it has fewer than 4)."""
    words = text.split()
    if len(words) < 4:
        return None
    return " ".join(words[: len(words) // 2])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["sft", "dpo"])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rejected", choices=["truncated", "words", "other"], default="truncated")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    examples = [s for path in args.files for s in map(split, documents(path)) if s]
    count = 0
    for i, (prompt, rest) in enumerate(examples):
        if args.kind == "sft":
            record = {"prompt": prompt, "response": rest}
        else:
            if args.rejected == "truncated":
                rejected = truncated(rest)
            elif args.rejected == "words":
                rejected = shuffled_words(rest, rng)
            else:
                j = rng.randrange(len(examples) - 1) if len(examples) > 1 else None
                rejected = None if j is None else examples[j + (j >= i)][1]
            if rejected is None or rejected == rest:
                continue
            record = {"prompt": prompt, "chosen": rest, "rejected": rejected}
        print(json.dumps(record, ensure_ascii=False))
        count += 1
    noun = "examples" if args.kind == "sft" else "pairs"
    print(f"derive {args.kind}: {count} {noun}", file=sys.stderr)


if __name__ == "__main__":
    main()
