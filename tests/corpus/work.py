# A workload for the corpus's Python interpreter: string building, hashing,
# compression, a dictionary and recursion; it writes a JSON report.
import hashlib
import json
import sys
import zlib
from collections import Counter


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
words = Counter()
digest = hashlib.sha256()
table = {}
for i in range(rounds):
    text = " ".join(str((i * 7919 + j * 104729) % 1000) for j in range(2000))
    words.update(text.split())
    digest.update(zlib.compress(text.encode()))
    table[i] = fib(18 + i % 4)
with open("/w/report.json", "w") as f:
    json.dump({"top": words.most_common(5), "fib": sum(table.values())}, f, sort_keys=True)
print(digest.hexdigest())
print(len(words), sum(words.values()))
