"""Writes deterministic pseudo-English (a small grammar over a small
vocabulary) for the training tests: learnable, so the loss must fall."""
import random
import sys

rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
subjects = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher"]
verbs = ["sees", "likes", "finds", "follows", "helps", "calls"]
objects = ["the ball", "a red box", "the green tree", "her brother", "the river", "a new book"]
endings = [".", "!", " today.", " again.", " in the morning."]
out = []
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1500):
    s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(endings)}"
    out.append(s[0].upper() + s[1:])
    if rng.random() < 0.2:
        out.append("\n%\n")
sys.stdout.write(" ".join(out) + "\n")
